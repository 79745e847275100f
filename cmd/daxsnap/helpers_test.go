package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/daemon/daemontest"
)

// cli runs daxsnap commands in-process against a daemon of its own.
type cli struct {
	t      *testing.T
	d      *daemon.Daemon
	shm    string
	socket string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	shm, err := os.MkdirTemp("/dev/shm", "daxsnap-cli-test-")
	if err != nil {
		t.Skipf("no /dev/shm for memory regions: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	d, c := daemontest.Start(t, daemon.Config{StateDir: t.TempDir(), PmemDir: shm, Version: "test"})
	t.Cleanup(func() {
		if err := daemontest.Stop(d, c); err != nil {
			t.Error(err)
		}
	})
	return &cli{t: t, d: d, shm: shm, socket: d.SocketPath()}
}

// runIn runs one command with stdin and returns its exit status and output.
func runIn(stdin string, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// ok runs a command against the daemon that must succeed; it returns stdout.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	code, out, errOut := runIn("", append([]string{"--socket", c.socket}, args...)...)
	if code != 0 {
		c.t.Fatalf("daxsnap %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// fail runs a command that must fail with one line on stderr containing want.
func (c *cli) fail(want string, args ...string) string {
	c.t.Helper()
	code, _, errOut := runIn("", append([]string{"--socket", c.socket}, args...)...)
	checkFailure(c.t, code, errOut, want, args)
	return errOut
}

func checkFailure(t *testing.T, code int, errOut, want string, args []string) {
	t.Helper()
	if code != 1 {
		t.Fatalf("daxsnap %s: exit %d, want 1 (stderr %q)", strings.Join(args, " "), code, errOut)
	}
	if !strings.HasPrefix(errOut, "daxsnap: ") || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, want) {
		t.Fatalf("daxsnap %s: stderr %q, want one line containing %q", strings.Join(args, " "), errOut, want)
	}
}

func golden(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\ngot:\n%s\nwant:\n%s", what, got, want)
	}
}
