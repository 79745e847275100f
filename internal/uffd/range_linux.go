package uffd

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mode says which faults a registered range reports (UFFDIO_REGISTER_MODE_*).
type Mode uint64

const (
	// ModeMissing: faults on pages that are not mapped yet.
	ModeMissing Mode = 1 << 0
	// ModeWP: writes to pages write-protected with Protect.
	ModeWP Mode = 1 << 1
	// ModeMinor: faults on pages in the page cache but not mapped.
	ModeMinor Mode = 1 << 2
)

// Register registers [addr, addr+n) of the userfaultfd's address space (the
// creating process's) with it, for the faults of mode. The range must be
// page-aligned (huge-page-aligned on hugetlbfs), and every mapping in it
// anonymous, shmem or hugetlbfs memory, mapped from a writable descriptor.
// Registering protects nothing yet.
func (fd *FD) Register(addr, n uintptr, mode Mode) error {
	r := uffdioRegister{Range: uffdioRange{uint64(addr), uint64(n)}, Mode: uint64(mode)}
	if err := fd.ioctl(reqRegister, unsafe.Pointer(&r)); err != nil {
		return rangeError("register", addr, n, err, registerHint)
	}
	if mode&ModeWP != 0 && r.Ioctls&(1<<nrWriteprotect) == 0 {
		fd.Unregister(addr, n)
		return fmt.Errorf("userfaultfd: register [%#x, +%#x): the kernel accepted write-protect mode but offers no UFFDIO_WRITEPROTECT there (ioctls %#x): %w",
			addr, n, r.Ioctls, ErrUnsupported)
	}
	return nil
}

func registerHint(errno unix.Errno) string {
	switch errno {
	case unix.EINVAL:
		return "the range must be page-aligned (huge-page-aligned on hugetlbfs) and mapped, the handshake (API) done, and the memory anonymous, " +
			"shmem (tmpfs, memfd) or hugetlbfs with the features this mode needs; fsdax, devdax and regular files cannot be registered"
	case unix.ENOMEM:
		return "the process that created the userfaultfd has exited (or the kernel is out of memory)"
	case unix.EBUSY:
		return "part of the range is registered with another userfaultfd"
	case unix.EPERM:
		return "the mapping is not writable (VM_MAYWRITE): map it PROT_WRITE-able from a descriptor opened read-write"
	}
	return ""
}

// Unregister stops reporting faults on [addr, addr+n); threads waiting on
// faults there are woken and their writes go on unprotected.
func (fd *FD) Unregister(addr, n uintptr) error {
	r := uffdioRange{uint64(addr), uint64(n)}
	if err := fd.ioctl(reqUnregister, unsafe.Pointer(&r)); err != nil {
		return rangeError("unregister", addr, n, err, nil)
	}
	return nil
}

// Protect write-protects [addr, addr+n), which must lie in a range
// registered with ModeWP: the next write to each page faults, whether the
// page was ever touched or not (on shmem and hugetlbfs; see the package
// documentation for anonymous memory). Reads are not affected.
func (fd *FD) Protect(addr, n uintptr) error {
	return fd.writeProtect("protect", addr, n, wpModeProtect)
}

// Unprotect lifts the write protection of [addr, addr+n) and wakes the
// threads waiting on faults there.
func (fd *FD) Unprotect(addr, n uintptr) error {
	return fd.writeProtect("unprotect", addr, n, 0)
}

// UnprotectNoWake lifts the write protection of [addr, addr+n) without
// waking anybody: call Wake after, for instance once several ranges are
// unprotected. A thread that was waiting may still go on early (a signal
// makes it retry the write, which then succeeds).
func (fd *FD) UnprotectNoWake(addr, n uintptr) error {
	return fd.writeProtect("unprotect", addr, n, wpModeDontWake)
}

func (fd *FD) writeProtect(op string, addr, n uintptr, mode uint64) error {
	w := uffdioWriteprotect{Range: uffdioRange{uint64(addr), uint64(n)}, Mode: mode}
	if err := fd.ioctl(reqWriteprotect, unsafe.Pointer(&w)); err != nil {
		return rangeError(op, addr, n, err, wpHint)
	}
	return nil
}

func wpHint(errno unix.Errno) string {
	switch errno {
	case unix.EINVAL:
		return "the range must be page-aligned (huge-page-aligned on hugetlbfs) and the handshake must have enabled PAGEFAULT_FLAG_WP"
	case unix.ENOENT:
		return "register the range with ModeWP first (in the address space of the process that created the userfaultfd)"
	}
	return ""
}

// Wake wakes the threads waiting on faults in [addr, addr+n).
func (fd *FD) Wake(addr, n uintptr) error {
	r := uffdioRange{uint64(addr), uint64(n)}
	if err := fd.ioctl(reqWake, unsafe.Pointer(&r)); err != nil {
		return rangeError("wake", addr, n, err, nil)
	}
	return nil
}

func rangeError(op string, addr, n uintptr, err error, hint func(unix.Errno) string) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("userfaultfd: %s [%#x, +%#x): %w", op, addr, n, err)
	}
	e := &RangeError{Op: op, Start: addr, Len: n, Errno: errno}
	switch {
	case errno == unix.EAGAIN:
		e.Hint = "the address space is changing (an unmap, remap or remove event is unread, or its sender has not resumed yet): read the events, then retry"
	case errno == unix.ESRCH:
		e.Hint = "the process that created the userfaultfd has exited"
	case hint != nil:
		e.Hint = hint(errno)
	}
	return e
}
