// Package errcode is the one mapping from daxsnap's error classes (dm's
// sentinels, access.ErrPermission) to the codes of package wire, for
// every door that answers with a code: the HTTP API and the DAX session
// socket. Block clients get an errno instead (dm.Errno); the public
// client maps codes back to its own error values.
package errcode

import (
	"errors"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// classes maps error classes to codes, most specific first (a TableError
// for a DAX change is also an invalid table).
var classes = []struct {
	err  error
	code string
}{
	{dm.ErrDAXChange, wire.CodeDAXChange},
	{dm.ErrUnknownTarget, wire.CodeUnknownTarget},
	{dm.ErrInvalidTable, wire.CodeInvalidTable},
	{dm.ErrBusy, wire.CodeBusy},
	{dm.ErrExists, wire.CodeExists},
	{dm.ErrNoTable, wire.CodeNoTable},
	{dm.ErrSuspended, wire.CodeSuspended},
	{dm.ErrReadOnly, wire.CodeReadOnly},
	{dm.ErrNotFound, wire.CodeNotFound},
	{dm.ErrInvalidArgument, wire.CodeInvalidArgument},
	{dm.ErrOutOfRange, wire.CodeOutOfRange},
	{dm.ErrNotSupported, wire.CodeNotSupported},
	{dm.ErrNoSpace, wire.CodeNoSpace},
	{dm.ErrIO, wire.CodeIO},
	{access.ErrPermission, wire.CodePermission},
}

// Of returns the code of err's class, wire.CodeInternal if it has none.
func Of(err error) string {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return wire.CodeInternal
}

// Class returns the class a code stands for, nil if none (CodeInternal,
// and codes of the doors' own: CodeRetry, CodeMethod).
func Class(code string) error {
	for _, c := range classes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// Codes lists every code Of can return besides wire.CodeInternal, most
// specific class first.
func Codes() []string {
	out := make([]string, len(classes))
	for i, c := range classes {
		out[i] = c.code
	}
	return out
}
