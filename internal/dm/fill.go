package dm

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Filler brings a device's memory back on demand, as a lazy restore from a
// checkpoint image does: the device serves at once, and each range is
// restored when first used. While a device has one (SetFiller), each of
// its block I/Os waits for Fill of its range first, discards and zeroing
// wait for FillAll (a hole they leave must not be taken for one still to
// be restored), and table loads and suspends are refused (ErrRestoring):
// a snapshot's copy-out and a checkpoint read the memory directly. Direct
// stores and loads by clients are its owner's business (missing faults).
type Filler interface {
	// Fill returns once [off, off+n) of the device holds its restored bytes.
	Fill(off, n int64) error
	// FillAll returns once all of the device does.
	FillAll() error
	// Progress is how many of the device's bytes are restored so far.
	Progress() (done, total int64)
}

// ErrRestoring is returned for a change that must wait until the
// device's memory is restored (see Filler); it is an ErrBusy.
var ErrRestoring = fmt.Errorf("%w: the device's memory is still being restored from its checkpoint", ErrBusy)

type fillerBox struct{ f Filler }

// SetFiller installs f (nil: none) as d's filler. Install it before
// anything can reach d; remove it once f has filled everything.
func (d *Device) SetFiller(f Filler) {
	if f == nil {
		d.filler.Store(nil)
		return
	}
	d.filler.Store(&fillerBox{f})
}

// Restoring reports whether d's own memory is being filled, and how far.
func (d *Device) Restoring() (done, total int64, ok bool) {
	b := d.filler.Load()
	if b == nil {
		return 0, 0, false
	}
	done, total = b.f.Progress()
	return done, total, true
}

// fill waits until d's own filler (if any) has restored [off, off+n):
// what each block I/O does before it enters. Devices below fill their
// own in their entry points.
func (d *Device) fill(off, n int64) error {
	b := d.filler.Load()
	if b == nil || n <= 0 {
		return nil
	}
	if err := b.f.Fill(off, n); err != nil {
		return fmt.Errorf("%s: restore %d bytes at offset %d from the checkpoint: %w", d.Name(), n, off, err)
	}
	return nil
}

// fillAll waits until d's own filler (if any) has restored all of d.
func (d *Device) fillAll() error {
	b := d.filler.Load()
	if b == nil {
		return nil
	}
	if err := b.f.FillAll(); err != nil {
		return fmt.Errorf("%s: restore from the checkpoint: %w", d.Name(), err)
	}
	return nil
}

// refuseRestoring is the error for a table change of a device whose
// memory, or that of a device below, is still being restored.
func (d *Device) refuseRestoring(op string) error {
	if done, total, ok := d.Restoring(); ok {
		return fmt.Errorf("%s %s: %w (%d of %d MiB so far): retry once `daxsnap status` no longer says restoring",
			op, d.Name(), ErrRestoring, done>>20, total>>20)
	}
	for _, b := range d.Below() {
		if err := b.refuseRestoring(op); err != nil {
			return err
		}
	}
	return nil
}

// Filling reports whether the memory behind d, its own or that of a
// device below, is still being restored: a client's mapping of d must
// then have its missing faults handled (Fill).
func (d *Device) Filling() bool {
	if d.filler.Load() != nil {
		return true
	}
	for _, b := range d.Below() {
		if b.Filling() {
			return true
		}
	}
	return false
}

// Fill waits until the memory behind [off, off+n) of d, in d and in the
// devices below it reaches, is restored: the fault handler calls it for a
// client's load or store of a page not restored yet.
func (d *Device) Fill(off, n int64) error {
	t, err := d.enterRange(off, n)
	if err != nil {
		return err
	}
	defer d.exit()
	return t.span(off, n, func(target Target, toff, _, n int64) error {
		return remapped(target, toff, n, func(dev backing.Device, devOff, n int64) error {
			if s, ok := dev.(*stacked); ok {
				return s.dev.Fill(devOff, n)
			}
			return nil
		})
	})
}
