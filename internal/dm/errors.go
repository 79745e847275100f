package dm

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Errors returned by table loading.
var (
	// ErrInvalidTable: the table text or a target's arguments are wrong.
	ErrInvalidTable = errors.New("invalid table")
	// ErrDAXChange: the load would take DAX or sync capability away from a live device.
	ErrDAXChange = errors.New("load would remove dax or sync capability")
	// ErrUnknownTarget: the table names a target type that is not registered.
	ErrUnknownTarget = errors.New("unknown target type")
)

// Errors returned by mapped device operations.
var (
	// ErrNotFound: no mapped device has that name.
	ErrNotFound = errors.New("device does not exist")
	// ErrExists: a mapped device with that name or uuid already exists.
	ErrExists = errors.New("device already exists")
	// ErrBusy: the device is open or in use and the operation needs it idle.
	ErrBusy = errors.New("device or resource busy")
	// ErrNoTable: the slot the operation needs holds no table.
	ErrNoTable = errors.New("no table loaded")
	// ErrSuspended: the operation needs a running device.
	ErrSuspended = errors.New("device is suspended")
	// ErrInvalidArgument: an argument to a verb is malformed.
	ErrInvalidArgument = errors.New("invalid argument")
)

// Errors returned by block I/O.
var (
	// ErrOutOfRange: the I/O reaches past the end of the device.
	ErrOutOfRange = errors.New("i/o beyond end of device")
	// ErrIO: the target failed the I/O (the error target, a failed device).
	ErrIO = errors.New("input/output error")
	// ErrReadOnly: a write to a read-only device or target.
	ErrReadOnly = errors.New("device is read-only")
	// ErrNotSupported: the target does not implement the operation.
	ErrNotSupported = errors.New("operation not supported")
	// ErrNoSpace: the target ran out of space (a full COW store).
	ErrNoSpace = errors.New("no space left on device")
)

// TableError says which line of a table is wrong and why, like the kernel's
// ti->error with the device and target type added by dm-table.c.
type TableError struct {
	Device string // mapped device name, if known
	Line   int    // 1-based line number in the table text, 0 if not line-specific
	Target string // target type of that line, if known
	Reason string // what is wrong, with the numbers involved
	Hint   string // what to do, if there is a clear remedy
	Err    error  // class: ErrInvalidTable, ErrUnknownTarget, ErrDAXChange, or a device error
}

func (e *TableError) Error() string {
	var b strings.Builder
	if e.Device != "" {
		fmt.Fprintf(&b, "%s: ", e.Device)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d", e.Line)
		if e.Target != "" {
			fmt.Fprintf(&b, " (%s)", e.Target)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	if e.Hint != "" {
		fmt.Fprintf(&b, "; %s", e.Hint)
	}
	return b.String()
}

func (e *TableError) Unwrap() error {
	if e.Err == nil {
		return ErrInvalidTable
	}
	return e.Err
}

// Errno maps an error to the errno a block client sees (NBD, FUSE), by
// error class. Unknown errors are EIO: a block client can do nothing better.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	switch {
	case errors.Is(err, ErrOutOfRange):
		return syscall.ENOSPC
	case errors.Is(err, ErrReadOnly):
		return syscall.EPERM
	case errors.Is(err, ErrNoSpace):
		return syscall.ENOSPC
	case errors.Is(err, ErrNotSupported):
		return syscall.EOPNOTSUPP
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, ErrInvalidTable):
		return syscall.EINVAL
	case errors.Is(err, ErrBusy):
		return syscall.EBUSY
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoTable):
		return syscall.ENXIO
	case errors.As(err, &errno):
		return errno
	}
	return syscall.EIO
}

// ClassError is a message worded for people, in one of the error classes
// above (ErrNotFound...), so that callers and the API can tell the class
// while the text says exactly what failed and what to do.
type ClassError struct {
	Msg   string
	Class error
}

func (e *ClassError) Error() string { return e.Msg }
func (e *ClassError) Unwrap() error { return e.Class }

// Errorf words an error of class.
func Errorf(class error, format string, args ...any) error {
	return &ClassError{Msg: fmt.Sprintf(format, args...), Class: class}
}
