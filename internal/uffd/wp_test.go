package uffd_test

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/uffd"
)

// A write to a protected page of the registered mapping waits for the
// handler, which copies the old page through the second mapping and lifts
// the protection; the write then lands.
func TestProtect_SameProcess(t *testing.T) {
	f := shmFixture(t, 4, wpShmem, uffd.FeatureThreadID)
	fill(f.daemon, 1)
	old := bytes.Clone(f.daemon)
	f.protect(pageSize, pageSize)

	// Reads of the protected page, and writes to the others, do not fault.
	if !bytes.Equal(f.client[pageSize:2*pageSize], old[pageSize:2*pageSize]) {
		t.Fatal("the registered mapping reads other bytes than the file holds")
	}
	s := f.store(f.client, 2*pageSize+8, 0xfeed)
	s.wait(t, "a store to an unprotected page")
	expectNoMsg(t, f.fd, "after a store to an unprotected page")

	// The daemon's mapping is not registered: it writes the protected page
	// freely, and the client sees it.
	f.daemon[pageSize+40] = 0xAB
	old[pageSize+40] = 0xAB
	if f.client[pageSize+40] != 0xAB {
		t.Fatal("a write through the unregistered mapping is not visible in the registered one")
	}

	const v uint64 = 0x1122334455667788
	s = f.store(f.client, pageSize+16, v)
	flt := expectFault(t, f.fd, f.pageAddr(1))
	if flt.TID != s.tid {
		t.Errorf("fault thread id %d, want the writer's %d", flt.TID, s.tid)
	}
	if s.finished() || get64(f.daemon, pageSize+16) == v {
		t.Fatal("the write to a protected page landed before the handler resolved the fault")
	}
	saved := bytes.Clone(f.daemon[pageSize : 2*pageSize]) // the copy-on-write
	if !bytes.Equal(saved, old[pageSize:2*pageSize]) {
		t.Fatal("the unregistered mapping shows other bytes than the page held when it was protected")
	}
	f.unprotect(pageSize, pageSize)
	s.wait(t, "after Unprotect")
	if got := get64(f.daemon, pageSize+16); got != v {
		t.Fatalf("after the fault, the file holds %#x, want %#x", got, v)
	}

	// Unprotected, the page takes writes without faults.
	f.store(f.client, pageSize+24, 1).wait(t, "a second store to the unprotected page")
	expectNoMsg(t, f.fd, "after a store to an unprotected page")
}

// On shmem, Protect covers pages the mapping never touched and even holes
// of the file, whether or not WP_UNPOPULATED is enabled: the kernel leaves a
// marker in the page table. On anonymous memory, without WP_UNPOPULATED a
// page never touched escapes the protection.
func TestProtect_Unpopulated(t *testing.T) {
	testutil.RequireRoot(t)
	for _, unpop := range []bool{false, true} {
		var opt uffd.Feature
		name := "WP_UNPOPULATED off"
		if unpop {
			opt, name = uffd.FeatureWPUnpopulated, "WP_UNPOPULATED on"
		}
		t.Run("shmem hole/"+name, func(t *testing.T) {
			f := shmFixture(t, 4, wpShmem|opt, 0)
			f.protect(0, 4*pageSize)
			s := f.store(f.client, 2*pageSize, 7)
			expectFault(t, f.fd, f.pageAddr(2))
			f.unprotect(2*pageSize, pageSize)
			s.wait(t, "after Unprotect")
		})
		t.Run("shmem page never mapped here/"+name, func(t *testing.T) {
			f := shmFixture(t, 4, wpShmem|opt, 0)
			fill(f.daemon, 3) // in the page cache, never touched through client
			f.protect(0, 4*pageSize)
			s := f.store(f.client, 3*pageSize+8, 7)
			expectFault(t, f.fd, f.pageAddr(3))
			f.unprotect(3*pageSize, pageSize)
			s.wait(t, "after Unprotect")
		})
		t.Run("anonymous/"+name, func(t *testing.T) {
			f := &fixture{t: t}
			mem, err := unix.Mmap(-1, 0, 4*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				t.Fatal(err)
			}
			f.unmapLater(mem)
			f.client = mem
			f.fd = newFD(t, 0, uffd.FeaturePagefaultFlagWP|opt, 0)
			if err := f.fd.Register(addrOf(mem), uintptr(len(mem)), uffd.ModeWP); err != nil {
				t.Fatal(err)
			}
			mem[0] = 1 // page 0 is populated, page 1 is not
			f.protect(0, 4*pageSize)
			s := f.store(mem, 8, 1)
			expectFault(t, f.fd, f.pageAddr(0))
			f.unprotect(0, pageSize)
			s.wait(t, "after Unprotect")

			s = f.store(mem, pageSize, 2)
			if !unpop {
				s.wait(t, "a store to a never-touched anonymous page, protected without WP_UNPOPULATED")
				expectNoMsg(t, f.fd, "a store to a never-touched anonymous page, protected without WP_UNPOPULATED")
				t.Log("as documented: without WP_UNPOPULATED, a never-touched anonymous page escapes write protection")
				return
			}
			expectFault(t, f.fd, f.pageAddr(1))
			f.unprotect(pageSize, pageSize)
			s.wait(t, "after Unprotect")
		})
	}
}

// hugetlbfs: faults are reported at the huge page, and every range must be
// huge-page aligned.
func TestProtect_Hugetlbfs(t *testing.T) {
	path, hp64 := testutil.HugetlbfsFile(t, 2, testutil.Raise)
	hp := int(hp64)
	file, ferr := os.OpenFile(path, os.O_RDWR, 0)
	if ferr != nil {
		t.Fatal(ferr)
	}
	t.Cleanup(func() { file.Close() })
	f := &fixture{t: t, file: file}
	f.client = mapShared(t, file, 2*hp)
	f.unmapLater(f.client)
	f.daemon = mapShared(t, file, 2*hp)
	f.unmapLater(f.daemon)
	f.fd = newFD(t, 0, wpShmem, 0)
	if err := f.fd.Register(addrOf(f.client), uintptr(2*hp), uffd.ModeWP); err != nil {
		t.Fatal(err)
	}
	fill(f.daemon[:pageSize], 5)
	old := bytes.Clone(f.daemon[hp : hp+pageSize])

	err := f.fd.Protect(addrOf(f.client)+uintptr(hp), uintptr(pageSize))
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("protecting 4 KiB of a huge page: got %v, want EINVAL", err)
	}
	t.Logf("as expected: %v", err)
	f.protect(hp, hp)
	s := f.store(f.client, hp+pageSize+8, 9)
	expectFault(t, f.fd, addrOf(f.client)+uintptr(hp))
	if s.finished() || !bytes.Equal(f.daemon[hp:hp+pageSize], old) {
		t.Fatal("the write to a protected huge page landed before the fault was resolved")
	}
	f.unprotect(hp, hp)
	s.wait(t, "after Unprotect")
	if got := get64(f.daemon, hp+pageSize+8); got != 9 {
		t.Fatalf("after the fault, the file holds %d, want 9", got)
	}
}

// With UserModeOnly, a system call writing into a protected page fails with
// EFAULT instead of waiting; without, it waits for the handler like a store.
func TestUserModeOnly_KernelWrite(t *testing.T) {
	testutil.RequireRoot(t)
	src := shmFile(t, pageSize)
	if _, err := src.WriteAt(bytes.Repeat([]byte{0x5A}, pageSize), 0); err != nil {
		t.Fatal(err)
	}
	for _, flags := range []uffd.Flags{uffd.UserModeOnly, 0} {
		f := &fixture{t: t, file: shmFile(t, 2*pageSize)}
		f.client = mapShared(t, f.file, 2*pageSize)
		f.unmapLater(f.client)
		f.fd = newFD(t, flags, wpShmem, 0)
		if f.fd.UserModeOnly() != (flags == uffd.UserModeOnly) {
			t.Fatalf("New(%d): UserModeOnly() = %v as root", flags, f.fd.UserModeOnly())
		}
		if err := f.fd.Register(addrOf(f.client), uintptr(2*pageSize), uffd.ModeWP); err != nil {
			t.Fatal(err)
		}
		f.protect(0, pageSize)
		done := make(chan error, 1)
		f.writers.Add(1)
		go func() {
			defer f.writers.Done()
			_, err := unix.Pread(int(src.Fd()), f.client[:pageSize], 0)
			done <- err
		}()
		if flags == uffd.UserModeOnly {
			select {
			case err := <-done:
				if !errors.Is(err, unix.EFAULT) {
					t.Fatalf("pread into a protected page with a user-mode-only userfaultfd: %v, want EFAULT", err)
				}
			case <-time.After(waitLimit):
				f.unprotect(0, pageSize)
				t.Fatal("pread into a protected page with a user-mode-only userfaultfd waited instead of failing")
			}
			continue
		}
		expectFault(t, f.fd, f.pageAddr(0))
		f.unprotect(0, pageSize)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(waitLimit):
			t.Fatal("pread did not complete after Unprotect")
		}
		if f.client[100] != 0x5A {
			t.Fatal("pread's data did not land")
		}
	}
}

// A signal interrupts a thread waiting on a fault; it retries the write and
// faults again, with a new message: handlers must expect repeats.
func TestProtect_SignalRepeatsFault(t *testing.T) {
	f := shmFixture(t, 1, wpShmem, uffd.FeatureThreadID)
	f.protect(0, pageSize)
	s := f.store(f.client, 0, 1)
	expectFault(t, f.fd, f.pageAddr(0))
	if err := unix.Tgkill(unix.Getpid(), s.tid, unix.SIGURG); err != nil {
		t.Fatal(err)
	}
	flt := expectFault(t, f.fd, f.pageAddr(0))
	if flt.TID != s.tid || s.finished() {
		t.Fatalf("after SIGURG: fault by thread %d (writer %d), store finished %v", flt.TID, s.tid, s.finished())
	}
	f.unprotect(0, pageSize)
	s.wait(t, "after Unprotect")
}

// Protect through a second userfaultfd of the same process protects a range
// registered with the first, and the fault goes to the first.
func TestProtect_ThroughOtherUserfaultfd(t *testing.T) {
	f := shmFixture(t, 1, wpShmem, 0)
	other := newFD(t, 0, wpShmem, 0)
	if err := other.Protect(f.pageAddr(0), uintptr(pageSize)); err != nil {
		t.Fatalf("Protect through another userfaultfd of this process: %v", err)
	}
	s := f.store(f.client, 0, 1)
	expectFault(t, f.fd, f.pageAddr(0))
	expectNoMsg(t, other, "the userfaultfd the range is not registered with")
	f.unprotect(0, pageSize)
	s.wait(t, "after Unprotect")
}
