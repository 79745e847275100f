package client

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Errors a refusal by the daemon (an *Error) matches with errors.Is, one
// per reason, so a program can tell what to do without reading the text:
//
//	if errors.Is(err, client.ErrBusy) { /* try again later */ }
var (
	// ErrBusy: the device is in use for a change, or the daemon is
	// stopping; asking again later may succeed.
	ErrBusy = errors.New("device or resource busy")
	// ErrRetry: the device was being changed (its mappings recalled) for
	// as long as the request's context allowed; Map asks again by itself
	// until then.
	ErrRetry = errors.New("device is being changed")
	// ErrNotFound: no device has that name.
	ErrNotFound = errors.New("device does not exist")
	// ErrPermission: the device's or its memory file's owner and mode do
	// not let this process map it (or not for writing).
	ErrPermission = errors.New("permission denied")
	// ErrNoSpace: no room: the session holds as many unarmed grants as it
	// may, or the device ran out of space.
	ErrNoSpace = errors.New("no space left on device")
	// ErrReadOnly: a writable map of a read-only device.
	ErrReadOnly = errors.New("device is read-only")
	// ErrNotSupported: the device cannot be mapped so (not DAX-capable,
	// not MAP_SYNC-capable for RequireSync, too many pieces).
	ErrNotSupported = errors.New("operation not supported")
	// ErrOutOfRange: the range reaches past the end of the device.
	ErrOutOfRange = errors.New("beyond the end of the device")
	// ErrInvalidArgument: the request is malformed (a length that is not
	// positive, an offset not aligned to the memory's pages).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrExists: the mapping id is already in use in the session.
	ErrExists = errors.New("already exists")
	// ErrNoTable: the device has no live table.
	ErrNoTable = errors.New("no table loaded")
	// ErrSuspended: the device is suspended.
	ErrSuspended = errors.New("device is suspended")
	// ErrIO: the device failed the I/O the request needed.
	ErrIO = errors.New("input/output error")
	// ErrInternal: a daxsnap bug or an unexpected failure; the message
	// says what.
	ErrInternal = errors.New("internal error")
)

// codes gives each daemon code the error value it matches.
var codes = map[string]error{
	wire.CodeBusy:            ErrBusy,
	wire.CodeRetry:           ErrRetry,
	wire.CodeNotFound:        ErrNotFound,
	wire.CodePermission:      ErrPermission,
	wire.CodeNoSpace:         ErrNoSpace,
	wire.CodeReadOnly:        ErrReadOnly,
	wire.CodeNotSupported:    ErrNotSupported,
	wire.CodeOutOfRange:      ErrOutOfRange,
	wire.CodeInvalidArgument: ErrInvalidArgument,
	wire.CodeExists:          ErrExists,
	wire.CodeNoTable:         ErrNoTable,
	wire.CodeSuspended:       ErrSuspended,
	wire.CodeIO:              ErrIO,
	wire.CodeInternal:        ErrInternal,
}

// Error is a request the daemon refused. errors.Is matches it with the
// Err value of its reason (ErrBusy, ErrNotFound, ...); Message is the
// daemon's words: what failed, why, and what to do.
type Error struct {
	Op      string
	Device  string
	Code    string // the daemon's code for the reason ("busy", "not_found", ...)
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("daxsnap %s %s: %s", e.Op, e.Device, e.Message)
}

// Is reports whether target is the Err value of e's reason.
func (e *Error) Is(target error) bool {
	v, ok := codes[e.Code]
	return ok && v == target
}
