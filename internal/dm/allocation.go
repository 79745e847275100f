package dm

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// HoleFinder is implemented by targets (and backing devices) that know
// which of their ranges store no data, such as zero; Device.Allocation asks
// it before looking through a Remapper at the device below.
type HoleFinder = backing.HoleFinder

// FastZeroer is implemented by targets (and backing devices) whose
// WriteZeroes costs less than writing the zeroes.
type FastZeroer = backing.FastZeroer

// Allocation is one run of a device's allocation map (NBD's
// base:allocation, SEEK_HOLE).
type Allocation struct {
	Len  int64
	Hole bool // stores no data: it reads back as zeroes
}

// Allocation maps [off, off+n) of the live table into runs of data and
// holes. A line is looked at through its target (HoleFinder), else
// through the device it remaps to (a file's holes, a mapped device's own
// map); a line that cannot tell counts as data.
func (d *Device) Allocation(off, n int64) ([]Allocation, error) {
	t, err := d.enterRange(off, n)
	if err != nil {
		return nil, err
	}
	defer d.exit()
	size := t.size.Bytes()
	if n <= 0 || off < 0 || off > size || n > size-off {
		return nil, fmt.Errorf("%s: allocation of %d bytes at offset %d: %w: device has %d bytes", d.Name(), n, off, ErrOutOfRange, size)
	}
	var out []Allocation
	for pos := off; pos < off+n; {
		i := t.find(pos)
		l := t.lines[i]
		toff := pos - l.Start.Bytes()
		want := min(off+n-pos, l.Len.Bytes()-toff)
		data, length, err := lineAllocated(t.targets[i], toff, want)
		if err != nil {
			return nil, fmt.Errorf("%s: allocation at offset %d, line %d (%s): %w", d.Name(), pos, l.Line, l.Type, err)
		}
		if length <= 0 || length > want {
			data, length = true, want
		}
		if k := len(out) - 1; k >= 0 && out[k].Hole == !data {
			out[k].Len += length
		} else {
			out = append(out, Allocation{Len: length, Hole: !data})
		}
		pos += length
	}
	return out, nil
}

func lineAllocated(target Target, off, n int64) (bool, int64, error) {
	switch tg := target.(type) {
	case HoleFinder:
		return tg.Allocated(off, n)
	case Remapper:
		ref, devOff, length, err := tg.Remap(off, n)
		if err != nil || length <= 0 || length > n {
			return true, n, nil
		}
		if hf, ok := ref.Device.(HoleFinder); ok {
			return hf.Allocated(devOff, length)
		}
		return true, length, nil
	}
	return true, n, nil
}

// FastZero reports whether WriteZeroes on the live table costs less than
// writing the zeroes: every line's target says so (FastZeroer), or remaps
// to devices that all do.
func (d *Device) FastZero() bool {
	t, err := d.enter()
	if err != nil {
		return false
	}
	defer d.exit()
	for i, target := range t.targets {
		if fz, ok := target.(FastZeroer); ok {
			if !fz.FastZero() {
				return false
			}
			continue
		}
		if _, ok := target.(Remapper); !ok || len(t.ctxs[i].Devices()) == 0 {
			return false
		}
		for _, dev := range t.ctxs[i].Devices() {
			if fz, ok := dev.Device.(FastZeroer); !ok || !fz.FastZero() {
				return false
			}
		}
	}
	return true
}
