package snapshot

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// SnapshotType is `snapshot <origin> <cow> <P|PO|N> <chunk_size>
// [<#feature args> [discard_zeroes_cow] [discard_passdown_origin]]`: a
// writable point-in-time view of the origin.
var SnapshotType = &dm.TargetType{Name: "snapshot", Version: [3]int{1, 16, 0}, New: newSnapshot}

// snap is a snapshot or snapshot-merge target.
type snap struct {
	ctx         *dm.CtorContext
	origin, cow *dm.DeviceRef
	state       *cowState
	features    Features
	merger      *merger // snapshot-merge only
}

var (
	_ dm.Target   = (*snap)(nil)
	_ dm.Resumer  = (*snap)(nil)
	_ dm.Messager = (*snap)(nil)

	_ dm.ActivationCutter = (*snap)(nil)
)

func newSnapshot(ctx *dm.CtorContext, args []string) (dm.Target, error) {
	return construct(ctx, args, plainSnapshot)
}

// role is which of the two targets construct builds.
type role int

const (
	plainSnapshot   role = iota // snapshot
	mergingSnapshot             // snapshot-merge
)

// construct parses the shared arguments of snapshot and snapshot-merge
// (snapshot_ctr) and attaches the target to its COW state.
func construct(ctx *dm.CtorContext, argv []string, r role) (*snap, error) {
	args, err := ParseArgs(argv)
	if err != nil {
		return nil, err
	}
	if r == mergingSnapshot && !args.Store.IsPersistent() {
		return nil, errors.New("snapshot-merge needs a persistent store (P): a transient snapshot cannot merge")
	}
	t := &snap{ctx: ctx, features: args.Features}
	if t.origin, err = ctx.OpenDevice(args.Origin, 0, ctx.Len); err != nil {
		return nil, fmt.Errorf("cannot get origin device: %w", err)
	}
	limit := cowGrowLimit(ctx.Len.Bytes(), args.Store, exstore.Sector(args.Chunk))
	if t.cow, err = ctx.OpenDeviceGrowable(args.COW, 0, 0, limit); err != nil {
		return nil, fmt.Errorf("cannot get COW device: %w", err)
	}
	if t.cow.ID() == t.origin.ID() {
		return nil, fmt.Errorf("COW device cannot be the same as origin device (%s and %s are one device)", args.COW, args.Origin)
	}
	reg := registryOf(ctx)
	t.state, err = reg.acquire(t.cow.ID(), func() (*cowState, error) {
		return openState(t.origin, t.cow, args.Store, exstore.Sector(args.Chunk))
	})
	if err != nil {
		return nil, err
	}
	if t.state.originID != t.origin.ID() {
		reg.release(t.state)
		return nil, fmt.Errorf("COW device %s already holds a snapshot of %s, not of %s", args.COW, t.state.originName, args.Origin)
	}
	if args.Store != t.state.storeType {
		reg.release(t.state)
		return nil, fmt.Errorf("COW device %s is in use as store type %s, not %s", args.COW, t.state.storeType, args.Store)
	}
	if err := checkPageSize(t.origin, t.state.chunkBytes); err != nil {
		reg.release(t.state)
		return nil, err
	}
	t.state.attach(t, ctx.TriggerEvent)
	if r == mergingSnapshot {
		t.merger = newMerger(t.state)
	}
	return t, nil
}

// usable fails I/O to a snapshot that is invalid or was taken over by a
// merge.
func (t *snap) usable() error {
	switch {
	case !t.state.valid.Load():
		return fmt.Errorf("%w: snapshot on %s is invalid", dm.ErrIO, t.cow.Name)
	case t.handedOver():
		return fmt.Errorf("%w: snapshot on %s was handed over to snapshot-merge", dm.ErrIO, t.cow.Name)
	}
	return nil
}

// forChunks calls fn for each chunk-sized piece of [off, off+n).
func (t *snap) forChunks(off, n int64, fn func(c exstore.Chunk, coff, pos, len int64) error) error {
	cb := t.state.chunkBytes
	for pos := int64(0); pos < n; {
		c := exstore.Chunk((off + pos) / cb)
		coff := (off + pos) % cb
		piece := min(n-pos, cb-coff)
		if err := fn(c, coff, pos, piece); err != nil {
			return err
		}
		pos += piece
	}
	return nil
}

func (t *snap) ReadAt(p []byte, off int64) (int, error) {
	if err := t.usable(); err != nil {
		return 0, err
	}
	err := t.forChunks(off, int64(len(p)), func(c exstore.Chunk, coff, pos, n int64) error {
		return t.readChunk(p[pos:pos+n], c, coff)
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// readChunk reads from the COW if the chunk has an exception, else from
// the origin while holding the chunk's lock, so the origin chunk cannot be
// overwritten under the read.
func (t *snap) readChunk(p []byte, c exstore.Chunk, coff int64) error {
	s := t.state
	if to, ok := s.lookup(c); ok && t.merger == nil {
		_, err := t.cow.ReadAt(p, int64(to)*s.chunkBytes+coff)
		return err
	}
	lk := s.lock(c)
	lk.RLock()
	defer lk.RUnlock()
	if to, ok := s.lookup(c); ok {
		_, err := t.cow.ReadAt(p, int64(to)*s.chunkBytes+coff)
		return err
	}
	_, err := t.origin.ReadAt(p, int64(c)*s.chunkBytes+coff)
	return err
}

func (t *snap) WriteAt(p []byte, off int64) (int, error) {
	if err := t.usable(); err != nil {
		return 0, err
	}
	if t.merger != nil {
		return t.mergeWrite(p, off)
	}
	if err := t.noteWrite(); err != nil {
		return 0, err
	}
	if err := t.write(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// write writes p at off into the COW, after remap gave the chunks that
// lacked one an exception: the chunks remap filled from p are done, the
// ones it copied from the origin take their pieces through the COW's file
// (as fresh chunks), the rest are written where their exceptions are.
func (t *snap) write(p []byte, off int64) error {
	done, err := t.remap(p, off)
	if err != nil {
		return err
	}
	s := t.state
	k := 0
	return t.forChunks(off, int64(len(p)), func(c exstore.Chunk, coff, pos, n int64) error {
		for k < len(done) && done[k].c < c {
			k++
		}
		if k < len(done) && done[k].c == c {
			if done[k].whole {
				return nil
			}
			_, err := s.writeFresh(p[pos:pos+n], int64(done[k].to)*s.chunkBytes+coff)
			return err
		}
		to, ok := s.lookup(c)
		if !ok {
			// Its exception went since remap looked: remap it again.
			return t.write(p[pos:pos+n], off+pos)
		}
		_, err := t.cow.WriteAt(p[pos:pos+n], int64(to)*s.chunkBytes+coff)
		return err
	})
}

// remapped is a chunk remap gave an exception: to is its COW chunk; whole
// says the write filled it, else the origin chunk was copied into it.
type remapped struct {
	c, to exstore.Chunk
	whole bool
}

// remap gives every chunk of the write of p at off that lacks an
// exception one, all committed together (one metadata write for the whole
// write, not one per chunk): a chunk the write covers whole is filled
// from p itself (start_full_bio), a run of them with one write; a chunk it
// covers in part gets the origin chunk first (copyRuns). It returns those
// chunks in order.
func (t *snap) remap(p []byte, off int64) ([]remapped, error) {
	s := t.state
	first, last := s.chunks(off, int64(len(p)))
	var buf [4]exstore.Chunk
	missing := s.missing(first, last, buf[:0])
	if len(missing) == 0 {
		return nil, nil
	}
	// covered reports whether the write covers chunk c whole, and where c
	// starts in p.
	covered := func(c exstore.Chunk) (int64, bool) {
		start, span := s.originSpan(c)
		return start - off, start >= off && start+span <= off+int64(len(p))
	}
	var done []remapped
	err := s.ensure(missing, func(pend []exstore.Exception) error {
		done = make([]remapped, 0, len(pend))
		var partial []exstore.Exception
		for i := 0; i < len(pend); {
			pos, ok := covered(pend[i].Old)
			if !ok {
				partial = append(partial, pend[i])
				done = append(done, remapped{c: pend[i].Old, to: pend[i].New})
				i++
				continue
			}
			j := i + runOf(pend[i:], func(prev, next exstore.Exception) bool {
				_, ok := covered(next.Old)
				return ok && next.Old == prev.Old+1 && next.New == prev.New+1
			})
			lastPos, _ := covered(pend[j-1].Old)
			_, span := s.originSpan(pend[j-1].Old)
			if _, err := s.writeFresh(p[pos:lastPos+span], int64(pend[i].New)*s.chunkBytes); err != nil {
				return err
			}
			for _, e := range pend[i:j] {
				done = append(done, remapped{c: e.Old, to: e.New, whole: true})
			}
			i = j
		}
		return s.copyRuns(partial, nil)
	})
	if err != nil {
		return nil, t.failedAllocation(err)
	}
	return done, nil
}

// failedAllocation handles a snapshot write that could not get a COW
// chunk: with PO a full COW overflows the snapshot, otherwise it is
// invalidated.
func (t *snap) failedAllocation(err error) error {
	if errors.Is(err, exstore.ErrNoSpace) && t.state.storeType == exstore.PersistentOverflow {
		if !t.state.overflow.Swap(true) {
			t.state.triggerEvents()
		}
		return fmt.Errorf("%w: snapshot on %s overflowed: its COW device is full", dm.ErrNoSpace, t.cow.Name)
	}
	t.state.invalidate(err)
	return fmt.Errorf("%w: snapshot on %s invalidated: %v", dm.ErrIO, t.cow.Name, err)
}

func (t *snap) WriteZeroes(off, n int64) error {
	zero := make([]byte, min(n, 1<<20))
	for pos := int64(0); pos < n; pos += int64(len(zero)) {
		piece := zero[:min(int64(len(zero)), n-pos)]
		if _, err := t.WriteAt(piece, off+pos); err != nil {
			return err
		}
	}
	return nil
}

// Discard needs discard_zeroes_cow: whole chunks that have an exception
// get their COW chunk zeroed, unmapped chunks are left alone (they still
// read from the origin), and with discard_passdown_origin the range is
// also discarded on the origin device, bypassing snapshot-origin.
func (t *snap) Discard(off, n int64) error {
	if err := t.usable(); err != nil {
		return err
	}
	if !t.features.DiscardZeroesCOW {
		return fmt.Errorf("%w: discard on a snapshot needs the discard_zeroes_cow feature", dm.ErrNotSupported)
	}
	if t.merger != nil {
		return nil // the kernel ignores discards while merging
	}
	if err := t.noteWrite(); err != nil {
		return err
	}
	s := t.state
	err := t.forChunks(off, n, func(c exstore.Chunk, coff, _, piece int64) error {
		if coff != 0 || piece != s.chunkBytes {
			return nil
		}
		if to, ok := s.lookup(c); ok {
			return t.cow.WriteZeroes(int64(to)*s.chunkBytes, s.chunkBytes)
		}
		return nil
	})
	if err != nil || !t.features.DiscardPassdownOrigin {
		return err
	}
	return t.origin.Discard(off, n)
}

// Flush works even on an invalid or handed-over snapshot, as in the
// kernel (snapshot_map remaps REQ_PREFLUSH to the COW device before it
// checks validity): a flush loses nothing, and suspend and shutdown flush
// every device.
func (t *snap) Flush() error {
	return errors.Join(t.cow.Flush(), t.origin.Flush())
}

// Status of a snapshot taken over by snapshot-merge is the kernel's: the
// handover (__handover_exceptions) marks the source invalid and leaves it
// the merge target's unused store, so it says "Invalid" and its table
// prints chunk size 0.
func (t *snap) Status(kind dm.StatusType) string {
	if kind == dm.StatusInfo {
		if t.handedOver() {
			return "Invalid"
		}
		return t.state.statusInfo()
	}
	return t.args().String()
}

// handedOver reports whether t is a plain snapshot whose COW a
// snapshot-merge target took over.
func (t *snap) handedOver() bool { return t.merger == nil && t.state.merging.Load() }

// args are the target's arguments as its table prints them: the chunk
// size is the store's (a persistent store's header overrides the table),
// 0 once handed over to a merge (see Status).
func (t *snap) args() Args {
	a := Args{Origin: t.origin.TableName(), COW: t.cow.TableName(), Store: t.state.storeType,
		Chunk: dm.Sector(t.state.store.ChunkSize()), Features: t.features}
	if t.handedOver() {
		a.Chunk = 0
	}
	return a
}

// ActivationCut asks the core for a cut of the origin's memory (see
// dm.ActivationCutter) while the snapshot becomes active, as the kernel's
// snapshot_resume suspends the origin: no direct store may reach the
// origin between the image's start and the copy-before-write that keeps
// it. A state already active (a reloaded table, a merge handover) starts
// no new image.
func (t *snap) ActivationCut() []*dm.DeviceRef {
	if t.state.active.Load() {
		return nil
	}
	return []*dm.DeviceRef{t.origin}
}

// PreResume refuses a second merge of one origin.
func (t *snap) PreResume() error {
	if t.merger == nil {
		return nil
	}
	for _, s := range t.state.reg.snapshotsOf(t.origin.ID()) {
		if s != t.state && s.merging.Load() {
			return errors.New("a snapshot of this origin is already merging")
		}
	}
	return nil
}

// Resume activates the snapshot: from now on origin writes copy out to it
// (snapshot_resume sets s->active). A COW device that grew meanwhile is
// taken in. A merge target starts merging.
func (t *snap) Resume() {
	t.state.grow()
	t.state.active.Store(true)
	if t.merger != nil {
		t.state.merging.Store(true)
		t.merger.start()
	}
}

// PreSuspend stops a merge; resume restarts it where it was.
func (t *snap) PreSuspend() {
	if t.merger != nil {
		t.merger.stop()
	}
}

func (t *snap) PostSuspend() {}

// Message takes daxsnap's own messages (the kernel's snapshot target
// takes none):
//
//	autoextend P  raise a device event when COW usage reaches P percent
//	              (1 to 100), and let an allocation that finds the COW full
//	              wait for it to grow; 0 turns both off
//	grow          read the COW device's size again, as a resume does
func (t *snap) Message(args []string) (string, error) {
	switch {
	case len(args) == 2 && args[0] == "autoextend":
		pct, err := strconv.ParseUint(args[1], 10, 32)
		if err != nil || pct > 100 {
			return "", fmt.Errorf("%w: autoextend %q: want a percentage from 0 (off) to 100", dm.ErrInvalidArgument, args[1])
		}
		t.state.setAutoextend(uint32(pct))
		return "", nil
	case len(args) == 1 && args[0] == "grow":
		t.state.grow()
		return "", nil
	}
	return "", fmt.Errorf("%w: snapshot targets take `autoextend P` and `grow`, not %q", dm.ErrInvalidArgument, strings.Join(args, " "))
}

func (t *snap) Close() error {
	if t.merger != nil {
		t.merger.stop()
	}
	t.state.detach(t)
	return t.state.reg.release(t.state)
}

// checkPageSize refuses a chunk smaller than the pages of the origin's
// memory: a direct-access write fault is caught per page, and the copy
// before it must cover the whole page (2 MiB on hugetlbfs).
func checkPageSize(origin *dm.DeviceRef, chunkBytes int64) error {
	page, where := memoryPage(origin.Device)
	if page <= chunkBytes {
		return nil
	}
	return fmt.Errorf("chunk size %d sectors (%d bytes) is smaller than the %d-byte pages of %s: direct-access write faults copy whole pages; use a chunk size of at least %d sectors",
		chunkBytes/dm.SectorSize, chunkBytes, page, where, page/dm.SectorSize)
}

// memoryPage is the mapping page size of the memory behind dev, found
// through stacked mapped devices, or 0 if dev is not mappable memory.
func memoryPage(dev backing.Device) (int64, string) {
	switch d := dev.(type) {
	case backing.MappingSource:
		return d.PageSize(), fmt.Sprintf("%s (a %s)", dev.Path(), dev.Kind())
	case dm.ExtentSource:
		exts, err := d.Extents(0, 1)
		if err != nil || len(exts) == 0 {
			return 0, ""
		}
		return exts[0].PageSize, fmt.Sprintf("%s (a %s under %s)", exts[0].Path, exts[0].Kind, dev.Path())
	}
	return 0, ""
}
