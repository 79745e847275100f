package dm

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// enter admits one block I/O: it waits while the device is suspended and
// returns the live table, with io read-held until the caller's exit.
func (d *Device) enter() (*Table, error) {
	d.io.RLock()
	if d.live == nil {
		d.io.RUnlock()
		return nil, fmt.Errorf("%s: %w: load and resume a table first", d.Name(), ErrNoTable)
	}
	return d.live, nil
}

func (d *Device) exit() { d.io.RUnlock() }

// enterRange is enter for an I/O of [off, off+n): once d's filler (if
// any) has restored that range (fill.go).
func (d *Device) enterRange(off, n int64) (*Table, error) {
	if err := d.fill(off, n); err != nil {
		return nil, err
	}
	return d.enter()
}

// Size is the live table's size in bytes (0 without a live table). It
// does not wait for a suspended device.
func (d *Device) Size() int64 { return d.size.Load() }

// ReadAt reads from the live table, split at target boundaries.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	t, err := d.enterRange(off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer d.exit()
	return t.readAt(p, off)
}

// WriteAt writes through the live table, split at target boundaries.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	t, err := d.enterRange(off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer d.exit()
	d.observe(t, off, int64(len(p)))
	return t.writeAt(p, off)
}

// ReadFileAt is ReadAt through the files of the memory behind the table
// (backing.FileReader): lines whose targets pass file I/O on (linear)
// read with pread where the memory is a tmpfs file, others as ReadAt.
// The bytes are the same; only the daemon's mapping is left untouched.
func (d *Device) ReadFileAt(p []byte, off int64) (int, error) {
	t, err := d.enterRange(off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer d.exit()
	return t.readFileAt(p, off)
}

// WriteFileAt is WriteAt through the files of the memory behind the
// table (backing.FileWriter), as ReadFileAt reads.
func (d *Device) WriteFileAt(p []byte, off int64) (int, error) {
	t, err := d.enterRange(off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer d.exit()
	d.observe(t, off, int64(len(p)))
	return t.writeFileAt(p, off)
}

// Flush makes every completed write durable.
func (d *Device) Flush() error {
	t, err := d.enter()
	if err != nil {
		return err
	}
	defer d.exit()
	return t.flush()
}

// Discard deallocates [off, off+n).
func (d *Device) Discard(off, n int64) error {
	if err := d.fillAll(); err != nil {
		return err
	}
	t, err := d.enter()
	if err != nil {
		return err
	}
	defer d.exit()
	d.observe(t, off, n)
	return t.discard(off, n)
}

// WriteZeroes makes [off, off+n) read back as zeroes.
func (d *Device) WriteZeroes(off, n int64) error {
	if err := d.fillAll(); err != nil {
		return err
	}
	t, err := d.enter()
	if err != nil {
		return err
	}
	defer d.exit()
	d.observe(t, off, n)
	return t.writeZeroes(off, n)
}

// DirectAccess returns the memory behind [off, off+n) of a DAX-capable
// device, limited to the range of the one target that holds off.
func (d *Device) DirectAccess(off, n int64) ([]byte, error) {
	t, err := d.enterRange(off, n)
	if err != nil {
		return nil, err
	}
	defer d.exit()
	return t.directAccess(off, n)
}

// PrepareWrite runs the targets' copy-before-write step for [off, off+n)
// without writing (see WritePreparer): the fault path calls it before it
// lets a direct-access store reach the memory.
func (d *Device) PrepareWrite(off, n int64) error {
	t, err := d.enterRange(off, n)
	if err != nil {
		return err
	}
	defer d.exit()
	if t.ReadOnly() {
		return fmt.Errorf("%w: prepare write of %d bytes at offset %d", ErrReadOnly, n, off)
	}
	d.observe(t, off, n)
	return t.span(off, n, func(target Target, toff, _, n int64) error {
		if wp, ok := target.(WritePreparer); ok {
			if err := wp.PrepareWrite(toff, n); err != nil {
				return err
			}
		}
		return remapped(target, toff, n, func(dev backing.Device, devOff, n int64) error {
			if wp, ok := dev.(WritePreparer); ok {
				return wp.PrepareWrite(devOff, n)
			}
			return nil
		})
	})
}

// PrepareWrites gives the block writes about to come to rs a head start:
// targets that can share their copy-before-write between ranges
// (WritesPreparer) do it now, for all of their pieces at once. It is only
// that: each write still prepares whatever is left, so ranges outside the
// table and targets that cannot share the work are skipped, and the
// observer hears of the writes when they come.
func (d *Device) PrepareWrites(rs []Range) error {
	t, err := d.enter()
	if err != nil {
		return err
	}
	defer d.exit()
	if t.ReadOnly() {
		return nil
	}
	size := t.size.Bytes()
	if len(t.targets) == 1 {
		// The common case (a volume with snapshots is one origin line):
		// target offsets are device offsets.
		wp, ok := t.targets[0].(WritesPreparer)
		if !ok {
			return nil
		}
		return wp.PrepareWrites(inRange(rs, size))
	}
	// Pieces by line, in table order.
	pieces := make([][]Range, len(t.targets))
	for _, r := range inRange(rs, size) {
		_ = t.span(r.Off, r.Len, func(target Target, toff, pos, n int64) error {
			if _, ok := target.(WritesPreparer); ok {
				i := t.find(r.Off + pos)
				pieces[i] = append(pieces[i], Range{Off: toff, Len: n})
			}
			return nil
		})
	}
	var errs []error
	for i, p := range pieces {
		if len(p) > 0 {
			errs = append(errs, t.targets[i].(WritesPreparer).PrepareWrites(p))
		}
	}
	return errors.Join(errs...)
}

// inRange is rs without the empty ranges and those not within [0, size):
// rs itself when all are.
func inRange(rs []Range, size int64) []Range {
	ok := func(r Range) bool { return r.Off >= 0 && r.Len > 0 && r.Off <= size && r.Len <= size-r.Off }
	for i, r := range rs {
		if !ok(r) {
			out := append([]Range(nil), rs[:i]...)
			for _, r := range rs[i+1:] {
				if ok(r) {
					out = append(out, r)
				}
			}
			return out
		}
	}
	return rs
}

// remapped calls fn for each run of target range [off, off+n) in the
// devices a Remapper passes it to; targets that are not Remappers have
// none. Direct stores through a table over /dev/mapper/NAME land in NAME's
// memory, so what NAME must do before a store (its snapshot-origin's
// copy-out) is reached this way: the backing device of such a line is
// NAME itself, a WritePreparer and WriteGranularizer.
func remapped(target Target, off, n int64, fn func(dev backing.Device, devOff, n int64) error) error {
	rm, ok := target.(Remapper)
	if !ok {
		return nil
	}
	for pos := off; pos < off+n; {
		ref, devOff, length, err := rm.Remap(pos, off+n-pos)
		if err != nil {
			return err
		}
		if length <= 0 {
			return fmt.Errorf("remap of %d bytes at %d returned %d bytes", off+n-pos, pos, length)
		}
		if err := fn(ref.Device, devOff, length); err != nil {
			return err
		}
		pos += length
	}
	return nil
}
