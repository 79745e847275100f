// Package linear implements the `linear` target: a range of the mapped
// device maps onto a range of one backing device (the kernel's dm-linear).
//
// Table line: `<start> <length> linear <dev> <offset>`, offset in sectors.
// dmsetup table prints `<dev> <offset>`; dmsetup status prints nothing.
package linear

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// Type is the linear target type, version as in the kernel's dm-linear.c.
var Type = &dm.TargetType{Name: "linear", Version: [3]int{1, 5, 0}, New: newLinear}

type linear struct {
	dev   *dm.DeviceRef
	start int64 // byte offset of target offset 0 in dev
}

var (
	_ dm.Target          = (*linear)(nil)
	_ dm.DirectAccesser  = (*linear)(nil)
	_ dm.Remapper        = (*linear)(nil)
	_ backing.FileReader = (*linear)(nil)
	_ backing.FileWriter = (*linear)(nil)
)

// newLinear constructs a linear target from `<dev> <offset>` (linear_ctr).
func newLinear(ctx *dm.CtorContext, args []string) (dm.Target, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("want 2 arguments <dev> <offset>, got %d%s", len(args), dm.QuoteArgs(args))
	}
	off, err := dm.ParseOffset(args[1])
	if err != nil {
		return nil, err
	}
	dev, err := ctx.OpenDevice(args[0], off, ctx.Len)
	if err != nil {
		return nil, err
	}
	return &linear{dev: dev, start: off.Bytes()}, nil
}

// mapOff is the one mapping from target to device offsets, used by block
// I/O and direct access alike (linear_map_sector).
func (l *linear) mapOff(off int64) int64 { return l.start + off }

func (l *linear) ReadAt(p []byte, off int64) (int, error)  { return l.dev.ReadAt(p, l.mapOff(off)) }
func (l *linear) WriteAt(p []byte, off int64) (int, error) { return l.dev.WriteAt(p, l.mapOff(off)) }
func (l *linear) Flush() error                             { return l.dev.Flush() }
func (l *linear) Discard(off, n int64) error               { return l.dev.Discard(l.mapOff(off), n) }
func (l *linear) WriteZeroes(off, n int64) error           { return l.dev.WriteZeroes(l.mapOff(off), n) }

// ReadFileAt and WriteFileAt pass the file I/O of dm.Device.ReadFileAt
// and WriteFileAt on to the device.
func (l *linear) ReadFileAt(p []byte, off int64) (int, error) {
	return backing.ReadFileAt(l.dev.Device, p, l.mapOff(off))
}

func (l *linear) WriteFileAt(p []byte, off int64) (int, error) {
	return backing.WriteFileAt(l.dev.Device, p, l.mapOff(off))
}

// DirectAccess hands out the device's memory; the core calls it only when
// the device is DAX-capable.
func (l *linear) DirectAccess(off, n int64) ([]byte, error) {
	da, ok := l.dev.Device.(backing.DirectAccesser)
	if !ok {
		return nil, fmt.Errorf("%w: %s is a %s without direct access", dm.ErrNotSupported, l.dev.Name, l.dev.Kind())
	}
	return da.DirectAccess(l.mapOff(off), n)
}

// Remap says where target bytes [off, off+n) live: all in one run of the device.
func (l *linear) Remap(off, n int64) (*dm.DeviceRef, int64, int64, error) {
	return l.dev, l.mapOff(off), n, nil
}

func (l *linear) Status(kind dm.StatusType) string {
	if kind == dm.StatusTable {
		return fmt.Sprintf("%s %d", l.dev.TableName(), l.start/dm.SectorSize)
	}
	return ""
}

// Close has nothing to release: the core puts the device back.
func (l *linear) Close() error { return nil }
