package uffd_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/uffd"
)

var pageSize = os.Getpagesize()

// wpShmem is what write-protecting a tmpfs or hugetlbfs mapping needs.
const wpShmem = uffd.FeaturePagefaultFlagWP | uffd.FeatureWPHugetlbfsShmem

const waitLimit = 10 * time.Second // how long any step may take before the test fails

func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// fixture is memory registered with a userfaultfd: client is the registered
// view (a client's mapping); daemon, when not nil, a second, unregistered
// mapping of the same file (the daemon's own view, used to copy old data).
type fixture struct {
	t       *testing.T
	file    *os.File
	client  []byte
	daemon  []byte
	fd      *uffd.FD
	writers sync.WaitGroup
}

// unmapLater unmaps mem at cleanup, after every writer has finished (they
// finish once the userfaultfd is closed, which is cleaned up before).
func (f *fixture) unmapLater(mem []byte) {
	f.t.Cleanup(func() {
		f.writers.Wait()
		if err := unix.Munmap(mem); err != nil {
			f.t.Errorf("munmap: %v", err)
		}
	})
}

// shmFile creates a sparse file of size bytes on tmpfs (/dev/shm).
func shmFile(t *testing.T, size int) *os.File {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-uffd-")
	if errors.Is(err, os.ErrNotExist) {
		testutil.Skip(t, "/dev/shm does not exist: mount a tmpfs there (mount -t tmpfs tmpfs /dev/shm)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f, err := os.OpenFile(filepath.Join(dir, "mem"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	return f
}

func mapShared(t *testing.T, f *os.File, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s: %v", f.Name(), err)
	}
	return mem
}

// newFD creates a userfaultfd with the features and closes it at cleanup.
func newFD(t *testing.T, flags uffd.Flags, required, optional uffd.Feature) *uffd.FD {
	t.Helper()
	fd, err := uffd.New(flags)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	if _, err := fd.API(required, optional); err != nil {
		if errors.Is(err, uffd.ErrUnsupported) {
			testutil.Skip(t, err.Error())
		}
		t.Fatal(err)
	}
	return fd
}

// shmFixture maps a sparse tmpfs file of pages pages twice and registers
// the first mapping in write-protect mode.
func shmFixture(t *testing.T, pages int, required, optional uffd.Feature) *fixture {
	t.Helper()
	testutil.RequireRoot(t)
	size := pages * pageSize
	f := &fixture{t: t, file: shmFile(t, size)}
	f.client = mapShared(t, f.file, size)
	f.unmapLater(f.client)
	f.daemon = mapShared(t, f.file, size)
	f.unmapLater(f.daemon)
	f.fd = newFD(t, 0, required, optional)
	if err := f.fd.Register(addrOf(f.client), uintptr(size), uffd.ModeWP); err != nil {
		t.Fatal(err)
	}
	return f
}

// pageAddr is the client address of page i.
func (f *fixture) pageAddr(i int) uintptr { return addrOf(f.client) + uintptr(i*pageSize) }

func (f *fixture) protect(off, n int) {
	f.t.Helper()
	if err := f.fd.Protect(addrOf(f.client)+uintptr(off), uintptr(n)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) unprotect(off, n int) {
	f.t.Helper()
	if err := f.fd.Unprotect(addrOf(f.client)+uintptr(off), uintptr(n)); err != nil {
		f.t.Fatal(err)
	}
}

// store is a write to memory from its own OS thread.
type store struct {
	tid  int
	done chan struct{}
}

// store writes v at mem[off:off+8] from a goroutine locked to an OS thread,
// as a client program's thread would, and returns once the thread runs.
func (f *fixture) store(mem []byte, off int, v uint64) *store {
	s := &store{done: make(chan struct{})}
	tid := make(chan int)
	f.writers.Add(1)
	go func() {
		defer f.writers.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		binary.LittleEndian.PutUint64(mem[off:], v)
		close(s.done)
	}()
	s.tid = <-tid
	return s
}

func (s *store) finished() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *store) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(waitLimit):
		t.Fatalf("%s: the store by thread %d did not complete in %v", what, s.tid, waitLimit)
	}
}

// nextMsg waits for the next message.
func nextMsg(t *testing.T, fd *uffd.FD) uffd.Msg {
	t.Helper()
	if err := fd.SetDeadline(time.Now().Add(waitLimit)); err != nil {
		t.Fatal(err)
	}
	var buf [1]uffd.Msg
	n, err := fd.Wait(buf[:], 0, uffd.BlockNetpoll)
	if err != nil {
		t.Fatalf("waiting for a userfaultfd message: %v", err)
	}
	if n != 1 {
		t.Fatalf("Wait returned %d messages into a buffer of 1", n)
	}
	return buf[0]
}

// expectFault waits for a write-protect fault on the page at addr and
// returns it. (A thread waiting on a fault has at most one message pending:
// if a signal interrupts the wait, the kernel drops its message, and the
// retried write queues a new one.)
func expectFault(t *testing.T, fd *uffd.FD, addr uintptr) uffd.Fault {
	t.Helper()
	m := nextMsg(t, fd)
	if m.Event != uffd.EventPagefault {
		t.Fatalf("got %v, want a page fault at %#x", &m, addr)
	}
	flt := m.Fault()
	if flt.Addr != addr {
		t.Fatalf("fault at %#x, want %#x", flt.Addr, addr)
	}
	if want := uffd.FaultWP | uffd.FaultWrite; flt.Flags != want {
		t.Fatalf("fault flags %v, want %v", flt.Flags, want)
	}
	return flt
}

// expectNoMsg checks that no message is pending.
func expectNoMsg(t *testing.T, fd *uffd.FD, why string) {
	t.Helper()
	var buf [4]uffd.Msg
	n, err := fd.ReadEvents(buf[:])
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%s: unexpected message %v", why, &buf[0])
	}
}

func get64(mem []byte, off int) uint64 { return binary.LittleEndian.Uint64(mem[off:]) }

// fill writes a pattern that differs per page and per byte.
func fill(mem []byte, seed byte) {
	for i := range mem {
		mem[i] = byte(i/pageSize)*31 + byte(i)*7 + seed
	}
}
