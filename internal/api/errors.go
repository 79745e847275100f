package api

import (
	"errors"
	"net/http"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/errcode"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Errors the API itself produces.
var (
	// ErrPermission: the caller may read but not change anything. It is
	// access's class, so every door answers a refusal with one code.
	ErrPermission = access.ErrPermission
)

// statuses gives each code its HTTP status; errcode maps errors to codes.
var statuses = map[string]int{
	wire.CodeDAXChange:       http.StatusConflict,
	wire.CodeUnknownTarget:   http.StatusBadRequest,
	wire.CodeInvalidTable:    http.StatusBadRequest,
	wire.CodeBusy:            http.StatusConflict,
	wire.CodeExists:          http.StatusConflict,
	wire.CodeNoTable:         http.StatusConflict,
	wire.CodeSuspended:       http.StatusConflict,
	wire.CodeReadOnly:        http.StatusConflict,
	wire.CodeNotFound:        http.StatusNotFound,
	wire.CodeInvalidArgument: http.StatusBadRequest,
	wire.CodeOutOfRange:      http.StatusBadRequest,
	wire.CodeNotSupported:    http.StatusBadRequest,
	wire.CodeNoSpace:         http.StatusInsufficientStorage,
	wire.CodeIO:              http.StatusInternalServerError,
	wire.CodePermission:      http.StatusForbidden,
}

// classify returns the code and HTTP status for err's class.
func classify(err error) (code string, status int) {
	code = errcode.Of(err)
	if status, ok := statuses[code]; ok {
		return code, status
	}
	return wire.CodeInternal, http.StatusInternalServerError
}

// CodeOf returns err's wire code: the code of an API error a client
// received, or the code the server answers err with (CodeInternal for an
// error of no class). It is how a caller on either side of the socket
// tells what kind of failure err is.
func CodeOf(err error) string {
	if ae, ok := errors.AsType[*Error](err); ok {
		return ae.Code
	}
	return errcode.Of(err)
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
	class := errcode.Class(e.Code)
	return class != nil && class == target
}
