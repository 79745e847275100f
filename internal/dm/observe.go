package dm

import (
	"fmt"
)

// Write observation, for layers that must know which parts of a device
// change (checkpoints: internal/checkpoint). A device has at most one
// WriteObserver; dm consults it, never imports its owner.

// WriteObserver is told of every change of a device's data before it
// happens, whichever way it comes:
//
//   - block writes: WriteAt, WriteZeroes and Discard of the device, and of
//     every device stacked on it (they reach it through its WriteAt);
//   - direct stores to its memory: the fault path calls PrepareWrite
//     before it lets a store through, and WriteGranularity is at most
//     Granularity, so a client mapping stays write-protected after a cut
//     and the first store to each unit after every cut faults (see
//     internal/session).
//
// BeforeWrite runs with the device's I/O admitted, as the I/O itself: a
// suspend (Quiesce) waits for it to return, and for the block write that
// follows it. It may block (to copy out what the write is about to change)
// but must not wait for a suspend of the device or call its methods. It
// cannot refuse the write.
type WriteObserver interface {
	// BeforeWrite: [off, off+n) of the device (within its size) is about
	// to change.
	BeforeWrite(off, n int64)
	// Granularity is the unit the observer tracks, in bytes (> 0).
	Granularity() int64
}

// SetWriteObserver installs o on d, until the returned remove is called.
// A device takes one observer: a second is refused. Writes already under
// way when o is installed may not be told to it; a write that found o
// before remove may still call it after remove returns, so o must take
// late calls.
func (d *Device) SetWriteObserver(o WriteObserver) (remove func(), err error) {
	if o == nil || o.Granularity() <= 0 {
		return nil, fmt.Errorf("%w: a write observer needs a granularity above 0", ErrInvalidArgument)
	}
	box := &observerBox{o}
	if !d.observer.CompareAndSwap(nil, box) {
		return nil, fmt.Errorf("%s: %w: the device has a write observer already (one checkpoint per device)", d.Name(), ErrBusy)
	}
	return func() { d.observer.CompareAndSwap(box, nil) }, nil
}

// observerBox holds an observer for an atomic.Pointer.
type observerBox struct{ o WriteObserver }

// observe tells d's observer, if any, that [off, off+n) of t, d's live
// table, is about to change; io is read-held. Requests t refuses (out of
// range, read-only) change nothing and are not told.
func (d *Device) observe(t *Table, off, n int64) {
	box := d.observer.Load()
	if box == nil || n <= 0 || off < 0 || off+n > t.size.Bytes() || t.ReadOnly() {
		return
	}
	box.o.BeforeWrite(off, n)
}

// observedGranularity is the observer's granularity, 0 without one.
func (d *Device) observedGranularity() int64 {
	if box := d.observer.Load(); box != nil {
		return box.o.Granularity()
	}
	return 0
}

// Quiesce runs fn at a cut of d: while d is suspended (its memory's cut
// started, so no direct store reaches it; in-flight block I/O drained
// and new I/O held), with the extents of its whole live table (see
// Extents). Then d runs again with the same live table: unlike
// Suspend+Resume, a table loaded into the inactive slot stays there. If
// d is suspended already, fn runs in that state and d stays suspended.
// fn must not call d's methods. Quiesce fails, without suspending d,
// when some line of the live table is not memory a client can map.
func (d *Device) Quiesce(fn func(live []Extent)) error {
	if err := d.refuseRestoring("quiesce"); err != nil {
		return err
	}
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.removed.Load() {
		return fmt.Errorf("quiesce %s: %w", d.Name(), ErrNotFound)
	}
	if d.live == nil {
		return fmt.Errorf("quiesce %s: %w: load and resume a table first", d.Name(), ErrNoTable)
	}
	// The live table cannot change while ctl is held.
	exts, err := d.live.extents(0, d.live.size.Bytes())
	if err != nil {
		return fmt.Errorf("quiesce %s: %w", d.Name(), err)
	}
	for i := range exts {
		exts[i].Via = append([]*Device{d}, exts[i].Via...)
	}
	if d.suspended {
		fn(exts)
		return nil
	}
	d.suspendLocked()
	fn(exts)
	inactive := d.inactive
	d.inactive = nil
	err = d.resumeLocked()
	d.inactive = inactive
	return err
}
