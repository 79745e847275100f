package state

import (
	"errors"
	"fmt"
)

// Errors returned by Open.
var (
	// ErrLocked: another process holds the state file open.
	ErrLocked = errors.New("state file is locked by another daxsnap serve")
	// ErrFormat: the file was written by an incompatible daxsnap.
	ErrFormat = errors.New("unsupported state file format")
)

// LockedError says who holds the state file.
type LockedError struct {
	Path string
	PID  int // 0 if the holder could not be found
}

func (e *LockedError) Error() string {
	holder := ""
	if e.PID > 0 {
		holder = fmt.Sprintf(" (pid %d)", e.PID)
	}
	return fmt.Sprintf("another daxsnap serve holds %s%s: stop it, or give this one another --state directory", e.Path, holder)
}

func (e *LockedError) Unwrap() error { return ErrLocked }
