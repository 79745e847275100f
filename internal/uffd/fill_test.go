package uffd_test

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/uffd"
)

// TestFill_missingShmem is lazy restore's kernel contract: a client's
// mapping registered for write-protect is registered again, by the
// holder of its userfaultfd, for missing faults too; a read of a hole
// then waits for the handler; Fill through a second mapping (registered
// with a userfaultfd of the filler's) places pages in the file's page
// cache, never over a page already there; ZeroPage resolves a hole with
// zeroes, write-protected.
func TestFill_missingShmem(t *testing.T) {
	const pages = 8
	f := shmFixture(t, pages, uffd.FeaturePagefaultFlagWP|uffd.FeatureWPHugetlbfsShmem, 0)
	size := pages * pageSize
	if err := f.fd.Register(addrOf(f.client), uintptr(size), uffd.ModeMissing|uffd.ModeWP); err != nil {
		t.Fatalf("register the client's range for missing faults too: %v", err)
	}
	filler := newFD(t, 0, 0, 0)
	fillMem := mapShared(t, f.file, size)
	f.unmapLater(fillMem)
	if err := filler.Register(addrOf(fillMem), uintptr(size), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	image := make([]byte, size)
	fill(image, 3)

	// A read of a hole waits for the handler.
	got := make(chan uint64, 1)
	f.writers.Add(1)
	go func() {
		defer f.writers.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		got <- binary.LittleEndian.Uint64(f.client[2*pageSize:])
	}()
	m := nextMsg(t, f.fd)
	if m.Event != uffd.EventPagefault || m.Fault().Addr != f.pageAddr(2) || m.Fault().Flags&uffd.FaultWP != 0 {
		t.Fatalf("got %v, want a missing fault at %#x", &m, f.pageAddr(2))
	}
	select {
	case v := <-got:
		t.Fatalf("the read of a hole returned %#x before the handler filled it", v)
	default:
	}
	placed, err := filler.Fill(addrOf(fillMem), image[:4*pageSize], pageSize, true)
	if err != nil || placed != int64(4*pageSize) {
		t.Fatalf("Fill of pages 0-3: placed %d, %v; want %d", placed, err, 4*pageSize)
	}
	if err := f.fd.Wake(f.pageAddr(2), uintptr(pageSize)); err != nil {
		t.Fatal(err)
	}
	if v, want := <-got, get64(image, 2*pageSize); v != want {
		t.Fatalf("the read after the fill returned %#x, want %#x", v, want)
	}

	// Pages present are never filled over.
	other := make([]byte, size)
	fill(other, 9)
	if placed, err := filler.Fill(addrOf(fillMem), other[:4*pageSize], pageSize, true); err != nil || placed != 0 {
		t.Fatalf("Fill over present pages: placed %d, %v; want 0", placed, err)
	}
	copy(f.daemon[5*pageSize:6*pageSize], other[5*pageSize:]) // page 5 written by other means
	placed, err = filler.Fill(addrOf(fillMem)+uintptr(4*pageSize), image[4*pageSize:], pageSize, true)
	if err != nil || placed != int64(3*pageSize) {
		t.Fatalf("Fill of pages 4-7 with 5 present: placed %d, %v; want %d", placed, err, 3*pageSize)
	}
	want := append(append(append([]byte{}, image[:5*pageSize]...), other[5*pageSize:6*pageSize]...), image[6*pageSize:]...)
	if !bytes.Equal(f.daemon, want) {
		t.Fatal("the file does not hold the filled pages, with page 5 as written")
	}

	// A hole punched after the fill: ZeroPage resolves its fault.
	if placed, err := f.fd.ZeroPage(f.pageAddr(6), pageSize); err != nil || placed {
		t.Fatalf("ZeroPage over a present page: placed %v, %v; want false, nil", placed, err)
	}
	if err := unix.Fallocate(int(f.file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(6*pageSize), int64(pageSize)); err != nil {
		t.Fatal(err)
	}
	f.writers.Add(1)
	go func() {
		defer f.writers.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		got <- binary.LittleEndian.Uint64(f.client[6*pageSize:])
	}()
	if m := nextMsg(t, f.fd); m.Event != uffd.EventPagefault || m.Fault().Addr != f.pageAddr(6) {
		t.Fatalf("got %v, want a missing fault at %#x", &m, f.pageAddr(6))
	}
	if placed, err := f.fd.ZeroPage(f.pageAddr(6), pageSize); err != nil || !placed {
		t.Fatalf("ZeroPage of a hole: placed %v, %v; want true, nil", placed, err)
	}
	if v := <-got; v != 0 {
		t.Fatalf("the read of the zeroed hole returned %#x", v)
	}
	// The zeroed page is write-protected: a store to it faults.
	s := f.store(f.client, 6*pageSize, 7)
	expectFault(t, f.fd, f.pageAddr(6))
	f.unprotect(6*pageSize, pageSize)
	s.wait(t, "store to the zeroed page")
}
