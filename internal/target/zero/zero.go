// Package zero implements the `zero` target (the kernel's dm-zero): reads
// return zeroes, writes and discards are silently dropped, like /dev/zero
// as a block device. It has no devices, so it has no direct access: there
// is no memory to hand out.
//
// Table line: `<start> <length> zero`. Table and status text are empty.
package zero

import (
	"fmt"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// Type is the zero target type, version as in the kernel's dm-zero.c.
var Type = &dm.TargetType{Name: "zero", Version: [3]int{1, 2, 0}, New: newZero}

type zero struct{}

var (
	_ dm.Target     = zero{}
	_ dm.HoleFinder = zero{}
	_ dm.FastZeroer = zero{}
)

func newZero(_ *dm.CtorContext, args []string) (dm.Target, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("takes no arguments, got %d (%q)", len(args), strings.Join(args, " "))
	}
	return zero{}, nil
}

func (zero) ReadAt(p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}

func (zero) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (zero) Flush() error                           { return nil }
func (zero) Discard(_, _ int64) error               { return nil }

// Allocated: the whole target is a hole, stored nowhere.
func (zero) Allocated(_, n int64) (bool, int64, error) { return false, n, nil }

// FastZero: zeroing costs nothing.
func (zero) FastZero() bool { return true }

// WriteZeroes has nothing to do: the range already reads back as zeroes.
func (zero) WriteZeroes(_, _ int64) error  { return nil }
func (zero) Status(_ dm.StatusType) string { return "" }
func (zero) Close() error                  { return nil }
