// Package errortarget implements the `error` target (the kernel's io-err in
// dm-target.c): every read, write, discard and write-zeroes fails with an
// error wrapping dm.ErrIO. It fills holes in a table and replaces the table
// of a device being removed by force.
//
// It implements direct access, failing it with dm.ErrIO, so that a table
// made of error lines counts as DAX-capable, as in the kernel: replacing a
// DAX device's table with `error` never trips the capability rule.
//
// Table line: `<start> <length> error`. Table and status text are empty.
package errortarget

import (
	"fmt"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// Type is the error target type, version as in the kernel's dm-target.c.
var Type = &dm.TargetType{Name: "error", Version: [3]int{1, 7, 0}, New: newError}

type errorTarget struct{}

var (
	_ dm.Target         = errorTarget{}
	_ dm.DirectAccesser = errorTarget{}
)

func newError(_ *dm.CtorContext, args []string) (dm.Target, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("takes no arguments, got %d (%q)", len(args), strings.Join(args, " "))
	}
	return errorTarget{}, nil
}

func fail(op string, off, n int64) error {
	return fmt.Errorf("error target: %s of %d bytes at offset %d: %w", op, n, off, dm.ErrIO)
}

func (errorTarget) ReadAt(p []byte, off int64) (int, error) {
	return 0, fail("read", off, int64(len(p)))
}

func (errorTarget) WriteAt(p []byte, off int64) (int, error) {
	return 0, fail("write", off, int64(len(p)))
}

// Flush succeeds: there is nothing to make durable, and the kernel sends no
// flush to this target (num_flush_bios is 0). Failing it would make every
// suspend of a device with an error line fail.
func (errorTarget) Flush() error { return nil }

func (errorTarget) Discard(off, n int64) error     { return fail("discard", off, n) }
func (errorTarget) WriteZeroes(off, n int64) error { return fail("write-zeroes", off, n) }

func (errorTarget) DirectAccess(off, n int64) ([]byte, error) {
	return nil, fail("direct access", off, n)
}

func (errorTarget) Status(_ dm.StatusType) string { return "" }
func (errorTarget) Close() error                  { return nil }
