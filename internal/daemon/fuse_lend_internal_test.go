package daemon

import (
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
)

// lendingBackend lends mem for any read; only LendRead is called.
type lendingBackend struct {
	fusefs.Backend
	mem []byte
}

func (b lendingBackend) LendRead(off, n int64) ([]byte, func(), bool) {
	return b.mem[off : off+n], func() {}, true
}

// Ensure that root's disconnect (revokeFUSE) of a FUSE file waits for a
// read answered from lent memory until its reply is written (the loan
// released), as it waits for a ReadAt under way, and that the file lends
// nothing after: the memory may go once the disconnect returns.
func TestFUSEFile_revokeWaitsForLoans(t *testing.T) {
	s := newDevStates(nil)
	dev := new(dm.Device)
	f := &fuseFile{set: s, dev: dev, be: lendingBackend{mem: make([]byte, 8192)}, release: func() {}}
	s.m[dev] = &devState{fuse: map[*fuseFile]struct{}{f: {}}}
	_, back, ok := f.LendRead(0, 4096)
	if !ok {
		t.Fatal("an open FUSE file lent nothing")
	}
	done := make(chan struct{})
	go func() { s.revokeFUSE(dev); close(done) }()
	select {
	case <-done:
		t.Fatal("disconnect returned while a read's memory was still lent")
	case <-time.After(50 * time.Millisecond):
	}
	back()
	<-done
	if _, _, ok := f.LendRead(0, 4096); ok {
		t.Error("a disconnected FUSE file still lends memory; want ReadAt to report it disconnected")
	}
}
