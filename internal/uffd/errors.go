package uffd

import (
	"errors"
	"fmt"
	"syscall"
)

// Errors that callers test with errors.Is. Range operations wrap them in a
// *RangeError, which also unwraps to the kernel's errno.
var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("userfaultfd is closed")
	// ErrUnsupported: the kernel lacks a feature the caller requires (see
	// FeatureError), or the memory cannot be registered in that mode.
	ErrUnsupported = errors.New("not supported by this kernel or memory")
	// ErrNotRegistered (ENOENT): the range is not registered, in the mode the
	// operation needs, with this userfaultfd.
	ErrNotRegistered = errors.New("range not registered with this userfaultfd")
	// ErrLayoutChanging (EAGAIN): the address space is being changed by an
	// munmap, mremap or madvise whose event is not read yet, or whose
	// sender has not resumed since; read the pending events, then retry.
	ErrLayoutChanging = errors.New("address space is changing: read the pending events, then retry")
	// ErrProcessGone (ESRCH): the process whose address space the
	// userfaultfd serves has exited.
	ErrProcessGone = errors.New("the address space's process has exited")
)

// RangeError reports a failed operation on a range of the address space the
// userfaultfd serves (the address space of the process that created it).
type RangeError struct {
	Op    string // "register", "unregister", "protect", "unprotect", "wake"
	Start uintptr
	Len   uintptr
	Errno syscall.Errno
	Hint  string // why, and what to do; may be empty
}

func (e *RangeError) Error() string {
	s := fmt.Sprintf("userfaultfd: %s [%#x, +%#x): %v", e.Op, e.Start, e.Len, e.Errno)
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

// Unwrap returns the errno and, where one applies, the sentinel error.
func (e *RangeError) Unwrap() []error {
	errs := []error{e.Errno}
	switch e.Errno {
	case syscall.ENOENT:
		errs = append(errs, ErrNotRegistered)
	case syscall.EAGAIN:
		errs = append(errs, ErrLayoutChanging)
	case syscall.ESRCH:
		errs = append(errs, ErrProcessGone)
	}
	return errs
}
