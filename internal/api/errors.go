package api

import (
	"errors"
	"net/http"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Errors the API itself produces.
var (
	// ErrPermission: the caller may read but not change anything.
	ErrPermission = errors.New("permission denied")
)

// classes maps error classes to codes and statuses, most specific first
// (a TableError for a DAX change is also an invalid table).
var classes = []struct {
	err    error
	code   string
	status int
}{
	{dm.ErrDAXChange, wire.CodeDAXChange, http.StatusConflict},
	{dm.ErrUnknownTarget, wire.CodeUnknownTarget, http.StatusBadRequest},
	{dm.ErrInvalidTable, wire.CodeInvalidTable, http.StatusBadRequest},
	{dm.ErrBusy, wire.CodeBusy, http.StatusConflict},
	{dm.ErrExists, wire.CodeExists, http.StatusConflict},
	{dm.ErrNoTable, wire.CodeNoTable, http.StatusConflict},
	{dm.ErrSuspended, wire.CodeSuspended, http.StatusConflict},
	{dm.ErrReadOnly, wire.CodeReadOnly, http.StatusConflict},
	{dm.ErrNotFound, wire.CodeNotFound, http.StatusNotFound},
	{dm.ErrInvalidArgument, wire.CodeInvalidArgument, http.StatusBadRequest},
	{dm.ErrOutOfRange, wire.CodeOutOfRange, http.StatusBadRequest},
	{dm.ErrNotSupported, wire.CodeNotSupported, http.StatusBadRequest},
	{dm.ErrNoSpace, wire.CodeNoSpace, http.StatusInsufficientStorage},
	{dm.ErrIO, wire.CodeIO, http.StatusInternalServerError},
	{ErrPermission, wire.CodePermission, http.StatusForbidden},
}

// classify returns the code and HTTP status for err's class.
func classify(err error) (code string, status int) {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return wire.CodeInternal, http.StatusInternalServerError
}

// classOf returns the sentinel error for a code, nil if none.
func classOf(code string) error {
	for _, c := range classes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// Error is an API error as a client sees it. errors.Is matches the class
// its code stands for (dm.ErrBusy for "busy"...).
type Error struct {
	Status  int    // HTTP status
	Code    string // wire code
	Message string // the daemon's message: what failed, why, what to do
}

func (e *Error) Error() string { return e.Message }

// Is reports whether target is the class of e's code.
func (e *Error) Is(target error) bool {
	class := classOf(e.Code)
	return class != nil && class == target
}
