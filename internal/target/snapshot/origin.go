package snapshot

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// OriginType is `snapshot-origin <origin>`: reads pass through; a write
// first copies the chunks it touches into every active snapshot of the
// origin that lacks them (origin_map, do_origin).
var OriginType = &dm.TargetType{Name: "snapshot-origin", Version: [3]int{1, 9, 0}, New: newOrigin}

type origin struct {
	dev *dm.DeviceRef
	reg *registry

	// fresh lists ranges of the origin whose chunks PrepareWrites copied
	// out and whose writes have not come yet (see WriteAt); at most
	// freshMax, the oldest dropped first. It is a hint: a stale or lost
	// entry only changes how a write reaches the memory, not what it
	// writes.
	freshMu  sync.Mutex
	fresh    []dm.Range
	hasFresh atomic.Bool
}

// freshMax bounds origin.fresh: more than the writes of an NBD burst.
const freshMax = 256

var (
	_ dm.Target         = (*origin)(nil)
	_ dm.DirectAccesser = (*origin)(nil)
	_ dm.Capabler       = (*origin)(nil)
	_ dm.WritePreparer  = (*origin)(nil)
	_ dm.WritesPreparer = (*origin)(nil)
	_ dm.Remapper       = (*origin)(nil)

	_ dm.WriteGranularizer = (*origin)(nil)
)

func newOrigin(ctx *dm.CtorContext, args []string) (dm.Target, error) {
	name, err := ParseOriginArgs(args)
	if err != nil {
		return nil, err
	}
	dev, err := ctx.OpenDevice(name, 0, ctx.Len)
	if err != nil {
		return nil, fmt.Errorf("cannot get origin: %w", err)
	}
	return &origin{dev: dev, reg: registryOf(ctx)}, nil
}

// prepareWrite copies [off, off+n) of the origin into every snapshot of it
// that needs it: the one copy-before-write step of block and fault paths.
// It reports whether it copied a chunk.
func prepareWrite(reg *registry, dev backing.Device, off, n int64, except *cowState) bool {
	copied := false
	for _, s := range reg.snapshotsOf(dev.ID()) {
		if s != except && s.copyOut(off, n) {
			copied = true
		}
	}
	return copied
}

func (o *origin) PrepareWrite(off, n int64) error {
	prepareWrite(o.reg, o.dev.Device, off, n, nil)
	return nil
}

// PrepareWrites copies the chunks of all of rs into every snapshot that
// needs them, each snapshot's in one ensure: one metadata write and
// flush commits them all, where the writes one by one would commit one
// each (the NBD reader's burst of queued writes).
func (o *origin) PrepareWrites(rs []dm.Range) error {
	var buf [16]dm.Range
	copied := buf[:0]
	for _, s := range o.reg.snapshotsOf(o.dev.ID()) {
		s.copyOutRanges(rs, func(off, n int64) { copied = append(copied, dm.Range{Off: off, Len: n}) })
	}
	if len(copied) > 0 {
		o.addFresh(copied)
	}
	return nil
}

func (o *origin) ReadAt(p []byte, off int64) (int, error) { return o.dev.ReadAt(p, off) }

// WriteAt copies out what the snapshots need, then writes. A write to a
// chunk just copied out (here, or by PrepareWrites for the burst it
// came in) goes through the origin's file (backing.FileWriter: pwrite on
// a tmpfs origin): the copy read the chunk with pread, so the daemon's
// mapping of it is likely untouched, and a first store into a page of
// the mapping costs 8-16 µs on the development VM against 2 µs for the
// write. Other writes store through the mapping, the cheaper way into
// pages the daemon has touched.
func (o *origin) WriteAt(p []byte, off int64) (int, error) {
	n := int64(len(p))
	if prepareWrite(o.reg, o.dev.Device, off, n, nil) || o.takeFresh(off, n) {
		return backing.WriteFileAt(o.dev.Device, p, off)
	}
	return o.dev.WriteAt(p, off)
}

// addFresh notes ranges whose chunks were just copied out.
func (o *origin) addFresh(rs []dm.Range) {
	o.freshMu.Lock()
	defer o.freshMu.Unlock()
	o.fresh = append(o.fresh, rs...)
	if k := len(o.fresh) - freshMax; k > 0 {
		o.fresh = append(o.fresh[:0], o.fresh[k:]...)
	}
	o.hasFresh.Store(true)
}

// takeFresh reports whether [off, off+n) meets a range addFresh noted,
// and forgets the ranges it meets.
func (o *origin) takeFresh(off, n int64) bool {
	if !o.hasFresh.Load() {
		return false
	}
	o.freshMu.Lock()
	defer o.freshMu.Unlock()
	met := false
	o.fresh = slices.DeleteFunc(o.fresh, func(r dm.Range) bool {
		meets := r.Off < off+n && off < r.Off+r.Len
		met = met || meets
		return meets
	})
	o.hasFresh.Store(len(o.fresh) > 0)
	return met
}

func (o *origin) Flush() error { return o.dev.Flush() }

func (o *origin) Discard(off, n int64) error {
	prepareWrite(o.reg, o.dev.Device, off, n, nil)
	return o.dev.Discard(off, n)
}

func (o *origin) WriteZeroes(off, n int64) error {
	prepareWrite(o.reg, o.dev.Device, off, n, nil)
	return o.dev.WriteZeroes(off, n)
}

func (o *origin) Status(kind dm.StatusType) string {
	if kind == dm.StatusTable {
		return o.dev.TableName()
	}
	return ""
}

func (o *origin) Close() error { return nil }

// DirectAccess hands out the origin's memory. Stores through it bypass
// WriteAt, so whoever maps it must run dm.Device.PrepareWrite before a
// store reaches a chunk a snapshot still needs; daxsnap's sessions do it
// from userfaultfd write-protect faults.
func (o *origin) DirectAccess(off, n int64) ([]byte, error) {
	da, ok := o.dev.Device.(backing.DirectAccesser)
	if !ok {
		return nil, fmt.Errorf("%w: %s is a %s without direct access", dm.ErrNotSupported, o.dev.Name, o.dev.Kind())
	}
	return da.DirectAccess(off, n)
}

// Remap says where target bytes live: the origin, at the same offsets.
func (o *origin) Remap(off, n int64) (*dm.DeviceRef, int64, int64, error) {
	return o.dev, off, n, nil
}

// WriteGranularity is the smallest chunk size among the snapshots of the
// origin that copy out on origin writes (active, valid, not merging), or 0
// when there is none: a direct store needs catching only while one exists,
// and one copy-before-write step then covers a whole chunk.
func (o *origin) WriteGranularity(off int64) int64 {
	var g int64
	for _, s := range o.reg.snapshotsOf(o.dev.ID()) {
		if !s.active.Load() || !s.valid.Load() || s.merging.Load() {
			continue
		}
		if g == 0 || s.chunkBytes < g {
			g = s.chunkBytes
		}
	}
	return g
}

// Capabilities keeps DAX only where write faults can be caught: without
// userfaultfd write-protect a direct store would skip copy-before-write.
func (o *origin) Capabilities(from backing.Capability) (backing.Capability, string) {
	if from.Has(backing.WPFault) {
		return from, ""
	}
	return from &^ (backing.DAX | backing.Sync), fmt.Sprintf(
		"snapshot-origin cannot catch direct writes to %s, a %s without userfaultfd write-protect, so it would lose copy-on-write",
		o.dev.Name, o.dev.Kind())
}
