package testutil

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Loop is a loop device a test attached with AttachLoop.
type Loop struct {
	Dev  string // the node, e.g. /dev/loop3
	once sync.Once
	err  error
}

// AttachLoop attaches file to a free loop device (losetup -f --show, with
// the extra losetup flags given) and detaches it when the test ends,
// unless the test did so with Detach first. A loop device's number is free
// again the moment it is detached, and tests in other packages attach
// concurrently: detaching a number twice can take away another test's
// device, which then reads as empty.
func AttachLoop(t testing.TB, file string, flags ...string) *Loop {
	t.Helper()
	RequireTool(t, "losetup")
	args := append(append([]string{}, flags...), "-f", "--show", file)
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", strings.Join(args, " "), err, out)
	}
	l := &Loop{Dev: strings.TrimSpace(string(out))}
	t.Cleanup(func() {
		if err := l.Detach(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return l
}

// Detach detaches the device; only the first call does anything.
func (l *Loop) Detach() error {
	l.once.Do(func() {
		if out, err := exec.Command("losetup", "-d", l.Dev).CombinedOutput(); err != nil {
			l.err = fmt.Errorf("losetup -d %s: %w: %s", l.Dev, err, strings.TrimSpace(string(out)))
		}
	})
	return l.err
}
