package main

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/daxsnap/daxsnap/internal/progress"
	"github.com/daxsnap/daxsnap/internal/wire"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal and returns its master and slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	unlock := 0
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); errno != 0 {
		t.Fatalf("unlockpt: %v", errno)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// Ensure that the merge progress bar draws on a terminal and on nothing
// else (a pipe, a file, a buffer get no \r-redrawn lines).
func TestProgressBar_terminalOnly(t *testing.T) {
	master, slave := openPTY(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !progress.IsTerminal(slave) || progress.IsTerminal(w) || progress.IsTerminal(&strings.Builder{}) {
		t.Fatalf("IsTerminal: pty %v, pipe %v, buffer %v; want true, false, false", progress.IsTerminal(slave), progress.IsTerminal(w), progress.IsTerminal(&strings.Builder{}))
	}
	for _, out := range []*os.File{slave, w} {
		bar := progressBar{w: out, on: progress.IsTerminal(out)}
		bar.show("s1", "vol", &wire.MergeProgress{Percent: 50, Remaining: 7})
		bar.end()
	}
	w.Close()
	buf := make([]byte, 4096)
	if n, _ := r.Read(buf); n != 0 {
		t.Fatalf("the bar drew on a pipe: %q", buf[:n])
	}
	n, err := master.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "merging s1 into vol [###############...............]  50.0% (7 chunks left)") {
		t.Fatalf("the bar on a terminal: %q, %v", buf[:n], err)
	}
}

// Ensure that an interrupted merge says what became of it: going on in
// the daemon, finished, deferred, or not started.
func TestInterruptedMerge(t *testing.T) {
	for _, tc := range []struct {
		s    wire.Snapshot
		err  error
		want string
	}{
		{wire.Snapshot{Name: "s1", Origin: "vol", State: wire.SnapshotMerging, Merge: &wire.MergeProgress{Percent: 42}},
			nil, "snapshot merge s1: interrupted; the merge continues in the daemon (42.0% done): `daxsnap snapshot list vol` shows its progress"},
		{wire.Snapshot{Name: "s1", Origin: "vol", State: wire.SnapshotMerged}, nil, "interrupted, but the merge had finished: merged s1 into vol"},
		{wire.Snapshot{Name: "s1", Origin: "vol", State: wire.SnapshotActive, MergeDeferred: true}, nil, "the merge is deferred until vol is closed"},
		{wire.Snapshot{Name: "s1", Origin: "vol", State: wire.SnapshotActive}, nil, "interrupted before the daemon started the merge (the snapshot is active)"},
		{wire.Snapshot{}, errors.New("connection refused"), "a merge the daemon started goes on without this command"},
	} {
		if got := interruptedMerge("s1", tc.s, tc.err).Error(); !strings.Contains(got, tc.want) {
			t.Errorf("%+v, %v: %q, want %q", tc.s, tc.err, got, tc.want)
		}
	}
}
