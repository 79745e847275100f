package storetest

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// CrashDev is an in-memory backing.Device that knows what a crash would
// keep. A write is on stable media only once a Flush issued after it
// completed has returned; CrashClone builds the device a power failure at
// this instant could leave behind: every flushed write, and optionally a
// random subset of the unflushed ones, each possibly torn at 512-byte
// sector boundaries (pebble's NewCrashableMem, at block level). Writes are
// assumed sector-atomic, as the kernel's dm-snapshot assumes.
type CrashDev struct {
	name string
	id   backing.ID

	mu      sync.Mutex
	data    []byte  // what reads return
	durable []byte  // what survives any crash
	pending []write // completed, not flushed, in completion order
	delay   time.Duration
	hook    func()

	flushes, writes atomic.Int64
}

// write is one completed write: data, or zeroes when data is nil.
type write struct {
	off int64
	n   int64
	p   []byte
}

var crashIno atomic.Uint64

// NewCrashDev returns a zeroed device of size bytes, all of it durable.
func NewCrashDev(name string, size int64) *CrashDev {
	return &CrashDev{
		name:    name,
		id:      backing.ID{Dev: 0xfffd, Ino: crashIno.Add(1)},
		data:    make([]byte, size),
		durable: make([]byte, size),
	}
}

// SetContents replaces the whole contents, as if written and flushed long
// ago (for example random bytes, to model a COW device that was not wiped).
func (d *CrashDev) SetContents(p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(p) != len(d.data) {
		panic(fmt.Sprintf("storetest: SetContents of %d bytes on a %d-byte device", len(p), len(d.data)))
	}
	copy(d.data, p)
	copy(d.durable, p)
	d.pending = nil
}

// SetFlushDelay makes every Flush take at least delay, like a real device,
// so that concurrent committers pile up behind it.
func (d *CrashDev) SetFlushDelay(delay time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.delay = delay
}

// SetHook makes fn run at the start of every write, write-zeroes, discard
// and flush, before the operation takes effect: a place to take CrashClones
// in the middle of a store's commit. fn must not write to the device.
func (d *CrashDev) SetHook(fn func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hook = fn
}

// Flushes counts Flush calls; Writes counts writes, write-zeroes and discards.
func (d *CrashDev) Flushes() int64 { return d.flushes.Load() }
func (d *CrashDev) Writes() int64  { return d.writes.Load() }

// CrashClone returns a new CrashDev holding what stable media could hold
// after a crash now. With rng nil that is exactly the flushed writes; with
// rng each unflushed write is dropped, kept, or kept for a random subset of
// its sectors. The clone has no pending writes, no hook and no delay.
func (d *CrashDev) CrashClone(rng *rand.Rand) *CrashDev {
	d.mu.Lock()
	defer d.mu.Unlock()
	img := make([]byte, len(d.durable))
	copy(img, d.durable)
	if rng != nil {
		for _, w := range d.pending {
			switch rng.IntN(3) {
			case 0: // lost
			case 1:
				w.apply(img, 0, w.n)
			default:
				for s := int64(0); s < w.n; s += 512 {
					if rng.IntN(2) == 0 {
						w.apply(img, s, min(s+512, w.n))
					}
				}
			}
		}
	}
	c := NewCrashDev(d.name+"~crash", int64(len(img)))
	copy(c.data, img)
	copy(c.durable, img)
	return c
}

// apply copies bytes [from, to) of w into img.
func (w write) apply(img []byte, from, to int64) {
	dst := img[w.off+from : w.off+to]
	if w.p == nil {
		clear(dst)
		return
	}
	copy(dst, w.p[from:to])
}

func (d *CrashDev) runHook() {
	d.mu.Lock()
	hook := d.hook
	d.mu.Unlock()
	if hook != nil {
		hook()
	}
}

func (d *CrashDev) span(off, n int64) error {
	if off < 0 || n < 0 || off+n > int64(len(d.data)) {
		return fmt.Errorf("storetest: %s: range %d+%d outside device of %d bytes", d.name, off, n, len(d.data))
	}
	return nil
}

func (d *CrashDev) Path() string                     { return d.name }
func (d *CrashDev) ID() backing.ID                   { return d.id }
func (d *CrashDev) Kind() backing.Kind               { return backing.KindFile }
func (d *CrashDev) Size() int64                      { return int64(len(d.data)) }
func (d *CrashDev) LogicalBlockSize() int            { return 512 }
func (d *CrashDev) Capabilities() backing.Capability { return 0 }
func (d *CrashDev) ReadOnly() bool                   { return false }
func (d *CrashDev) Close() error                     { return nil }

func (d *CrashDev) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.span(off, int64(len(p))); err != nil {
		return 0, err
	}
	return copy(p, d.data[off:]), nil
}

func (d *CrashDev) WriteAt(p []byte, off int64) (int, error) {
	d.runHook()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.span(off, int64(len(p))); err != nil {
		return 0, err
	}
	d.writes.Add(1)
	copy(d.data[off:], p)
	d.pending = append(d.pending, write{off: off, n: int64(len(p)), p: append([]byte(nil), p...)})
	return len(p), nil
}

func (d *CrashDev) WriteZeroes(off, n int64) error {
	d.runHook()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.span(off, n); err != nil {
		return err
	}
	d.writes.Add(1)
	clear(d.data[off : off+n])
	d.pending = append(d.pending, write{off: off, n: n})
	return nil
}

// Discard zeroes the range: every device daxsnap opens reads discarded
// ranges back as zeroes.
func (d *CrashDev) Discard(off, n int64) error { return d.WriteZeroes(off, n) }

// Flush makes every write completed so far durable.
func (d *CrashDev) Flush() error {
	d.runHook()
	d.flushes.Add(1)
	d.mu.Lock()
	delay := d.delay
	d.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.pending {
		w.apply(d.durable, 0, w.n)
	}
	d.pending = nil
	return nil
}

var _ backing.Device = (*CrashDev)(nil)
