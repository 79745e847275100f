package snapshot

import (
	"errors"
	"fmt"
	"log/slog"
	mbits "math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// lockStripes is the number of chunk locks per COW state: enough that
// unrelated chunks rarely share one, few enough to lock all in order.
const lockStripes = 256

// cowState is one snapshot's state, shared by every target naming its COW
// device (see the package documentation).
type cowState struct {
	refs int       // guarded by registry.mu
	reg  *registry // the registry holding it, set by acquire

	cowID, originID backing.ID
	origin, cow     backing.Device
	originName      string
	store           exstore.Store
	storeType       exstore.StoreType
	chunkBytes      int64
	originChunks    exstore.Chunk
	log             *slog.Logger

	locks [lockStripes]sync.RWMutex

	mu         sync.RWMutex // guards exceptions and order; never held during I/O
	exceptions map[exstore.Chunk]exstore.Chunk
	// order lists the origin chunks of the exceptions in the order they
	// entered the table: the store's commit order after Load, then the
	// order of ensure's insertions. At any instant no exception is being
	// committed (a cut), a prefix of it is exactly the exceptions durable
	// then, in memory and on disk alike (track.go).
	order []exstore.Chunk
	// written: a write reached the snapshot itself (not through its
	// origin) since the state was opened; see track.go.
	written atomic.Bool

	active      atomic.Bool // a target using it has resumed: origin writes copy out
	valid       atomic.Bool
	overflow    atomic.Bool
	merging     atomic.Bool // a snapshot-merge target took it over
	mergeFailed atomic.Bool
	invalidOnce sync.Once

	evMu   sync.Mutex
	events map[any]func() // event triggers of the targets using it

	// autoextend is the usage percentage (1 to 100) at which a watcher
	// extends the COW (the `autoextend P` message), 0 for none: crossing
	// it raises a device event, and an allocation that finds the COW full
	// waits for the watcher to grow it instead of invalidating at once.
	autoextend atomic.Uint32
	crossed    atomic.Bool   // usage is at or above autoextend; the event was raised
	growth     chan struct{} // closed and replaced on each grow or disarm (under growMu)
	growMu     sync.Mutex

	// bufs holds chunk-sized copy buffers, runBufs run-sized ones
	// (runBytes) for copies of more than a chunk (see initBufs).
	bufs, runBufs sync.Pool
	ahead         *cowAhead // nil unless the COW device is memory
	// cowMem is the COW device when copies can go straight into its
	// memory (volatile memory, see directCOW), nil otherwise.
	cowMem backing.DirectAccesser
	// cowFile is the COW device when copies are written through its
	// file, which beats a store into its fresh memory (see fileCOW).
	cowFile backing.FileWriter

	// copying is read-held by each origin copy-out, which may have found
	// the state just before its last target released it; close write-holds
	// it to let those finish before the store closes, and sets closed so
	// none starts after.
	copying sync.RWMutex
	closed  bool
}

// openState opens the exception store on cow and loads its exceptions.
func openState(origin, cow *dm.DeviceRef, storeType exstore.StoreType, chunk exstore.Sector) (*cowState, error) {
	s := &cowState{
		cowID: cow.ID(), originID: origin.ID(), origin: origin.Device, cow: cow.Device,
		originName: origin.Name, storeType: storeType, log: slog.Default().With("cow", cow.Name),
		exceptions: map[exstore.Chunk]exstore.Chunk{}, events: map[any]func(){},
		growth: make(chan struct{}),
	}
	var err error
	if storeType.IsPersistent() {
		s.store, err = openPersistent(cow.Device, chunk, origin.LogicalBlockSize(), storeType)
	} else {
		s.store, err = openTransient(cow.Device, chunk, origin.LogicalBlockSize())
	}
	if err != nil {
		return nil, err
	}
	s.chunkBytes = s.store.ChunkSize().Bytes()
	s.originChunks = exstore.Chunk((origin.Size() + s.chunkBytes - 1) / s.chunkBytes)
	s.initBufs()
	s.valid.Store(true)
	err = s.store.Load(func(e exstore.Exception) error {
		if e.Old >= s.originChunks {
			return exstore.Corruptf("exception %v: origin chunk %d is beyond the origin's %d chunks of %d bytes", e, e.Old, s.originChunks, s.chunkBytes)
		}
		if _, dup := s.exceptions[e.Old]; !dup {
			s.order = append(s.order, e.Old)
		}
		s.exceptions[e.Old] = e.New
		return nil
	})
	switch {
	case errors.Is(err, exstore.ErrInvalidated):
		s.valid.Store(false)
	case err != nil:
		s.store.Close()
		return nil, fmt.Errorf("load exceptions from %s: %w", cow.Name, err)
	}
	s.ahead = newCowAhead(cow.Device, s.chunkBytes, s.log)
	s.cowMem = directCOW(cow.Device)
	s.cowFile = fileCOW(cow.Device)
	s.ahead.used(0)
	return s, nil
}

// grow lets the store use a COW device that grew since it was opened
// (snapshot extend): the device reads its size again, then the store.
// Allocations waiting for growth try again, and the threshold is armed
// again for the new size.
func (s *cowState) grow() {
	if r, ok := s.cow.(backing.Reprober); ok {
		if err := r.Reprobe(); err != nil {
			s.log.Warn("COW device size not read again; the snapshot keeps its old size", "err", err)
			return
		}
	}
	if g, ok := s.store.(exstore.Grower); ok {
		g.Grow()
	}
	s.ahead.grew(s.cow.Size())
	s.crossed.Store(false)
	s.checkThreshold()
	s.wakeGrowthWaiters()
}

func (s *cowState) wakeGrowthWaiters() {
	s.growMu.Lock()
	close(s.growth)
	s.growth = make(chan struct{})
	s.growMu.Unlock()
}

// setAutoextend arms (pct 1 to 100) or disarms (0) the threshold event
// and the wait for growth.
func (s *cowState) setAutoextend(pct uint32) {
	s.autoextend.Store(pct)
	s.crossed.Store(false)
	if pct == 0 {
		s.wakeGrowthWaiters() // they give up and invalidate
		return
	}
	s.checkThreshold()
}

// checkThreshold raises a device event the first time usage reaches the
// autoextend threshold (the kernel's dm_table_event), so that a watcher
// waiting on the device's events extends the COW.
func (s *cowState) checkThreshold() {
	pct := uint64(s.autoextend.Load())
	if pct == 0 || s.crossed.Load() {
		return
	}
	alloc, total, _ := s.store.Usage()
	if total > 0 && uint64(alloc)*100 >= uint64(total)*pct && !s.crossed.Swap(true) {
		s.triggerEvents()
	}
}

// growWait is how long an allocation that finds the COW full waits for
// an autoextend watcher to grow it, and growPoll how often it reads the
// COW's size meanwhile (a grown file is taken in without any message).
const (
	growWait = time.Minute
	growPoll = 10 * time.Millisecond
)

// prepare reserves a COW chunk. A full COW may have grown since it was
// opened: like the kernel, which reads the COW device's size at each
// allocation, it reads the size again before giving up. With autoextend
// armed it waits up to growWait for the watcher to grow the COW.
func (s *cowState) prepare() (exstore.Chunk, error) {
	to, err := s.store.Prepare()
	if errors.Is(err, exstore.ErrNoSpace) {
		s.grow()
		to, err = s.store.Prepare()
	}
	var deadline time.Time
	for errors.Is(err, exstore.ErrNoSpace) && s.autoextend.Load() != 0 {
		if deadline.IsZero() {
			deadline = time.Now().Add(growWait)
			s.log.Warn("COW full: waiting for it to be extended", "origin", s.originName, "wait", growWait)
			if hook := s.reg.growWaitHook.Load(); hook != nil {
				(*hook)()
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%w (it was not extended within %v)", err, growWait)
		}
		s.growMu.Lock()
		ch := s.growth
		s.growMu.Unlock()
		select {
		case <-ch:
		case <-time.After(growPoll):
			s.grow()
		}
		to, err = s.store.Prepare()
	}
	if err == nil {
		s.checkThreshold()
	}
	return to, err
}

func (s *cowState) close() error {
	s.copying.Lock()
	s.closed = true
	s.copying.Unlock()
	s.ahead.wait()
	return s.store.Close()
}

func (s *cowState) lookup(c exstore.Chunk) (exstore.Chunk, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, ok := s.exceptions[c]
	return n, ok
}

// count is the number of exceptions in the table.
func (s *cowState) count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.exceptions)
}

// chunks returns the chunks that [off, off+n) of the origin touches.
func (s *cowState) chunks(off, n int64) (first, last exstore.Chunk) {
	return exstore.Chunk(off / s.chunkBytes), exstore.Chunk((off + n - 1) / s.chunkBytes)
}

// missing appends the chunks in [first, last] without an exception to
// out (a caller's buffer, so that a first write allocates no list).
func (s *cowState) missing(first, last exstore.Chunk, out []exstore.Chunk) []exstore.Chunk {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for c := first; c <= last; c++ {
		if _, ok := s.exceptions[c]; !ok {
			out = append(out, c)
		}
	}
	return out
}

func (s *cowState) lock(c exstore.Chunk) *sync.RWMutex { return &s.locks[c%lockStripes] }

// stripes is a set of chunk lock stripes, one bit each (rounded up, so
// that a lockStripes not a multiple of 64 still fits).
type stripes [(lockStripes + 63) / 64]uint64

// lockChunks write-locks the stripes of chunks in ascending order and
// returns them for unlockStripes. It allocates nothing: it runs on every
// first write.
func (s *cowState) lockChunks(chunks []exstore.Chunk) stripes {
	var set stripes
	for _, c := range chunks {
		i := c % lockStripes
		set[i/64] |= 1 << (i % 64)
	}
	for w, bits := range set {
		for ; bits != 0; bits &= bits - 1 {
			s.locks[w*64+mbits.TrailingZeros64(bits)].Lock()
		}
	}
	return set
}

// unlockStripes unlocks what lockChunks locked.
func (s *cowState) unlockStripes(set stripes) {
	for w, bits := range set {
		for ; bits != 0; bits &= bits - 1 {
			s.locks[w*64+mbits.TrailingZeros64(bits)].Unlock()
		}
	}
}

// originSpan is the part of chunk c that lies on the origin: a last chunk
// may be partial when the origin is not a multiple of the chunk size.
func (s *cowState) originSpan(c exstore.Chunk) (off, n int64) {
	off = int64(c) * s.chunkBytes
	return off, min(s.chunkBytes, s.origin.Size()-off)
}

// directCOW returns cow if copies may go straight into its memory: a
// writable tmpfs or hugetlbfs file, whose stores need no write-back (a
// flush of it makes nothing more durable) and whose mapping does not
// move when it grows. Persistent memory needs its cache lines written
// back, and a mapped device would miss its observers; those copy
// through a buffer and WriteAt.
func directCOW(cow backing.Device) backing.DirectAccesser {
	da, ok := cow.(backing.DirectAccesser)
	if !ok || cow.ReadOnly() || (cow.Kind() != backing.KindTmpfs && cow.Kind() != backing.KindHugetlbfs) {
		return nil
	}
	return da
}

// fileCOW returns cow if copies are best written with write(2): a
// writable tmpfs file in small pages (backing.FileWrites). A COW chunk is
// filled once, in memory the daemon has not touched, so a store into it
// pays a page fault per page (and, on a VM with shadow page tables, a
// trap to the hypervisor: 8-20 µs per 4 KiB page, see backing.FileWriter),
// which the kernel's copy does not. In 2 MiB pages that fault comes once
// per 512 pages, and copies go straight into the COW's memory.
func fileCOW(cow backing.Device) backing.FileWriter {
	fw, ok := cow.(backing.FileWriter)
	if !ok || cow.ReadOnly() || !backing.FileWrites(cow) {
		return nil
	}
	return fw
}

// copyRunMax bounds the bytes copyRun moves with one read and one write:
// a 1 MiB write over 4 KiB chunks is one run, not 256 pairs of calls.
const copyRunMax = 1 << 20

// runBytes is the most copyRun copies at once: copyRunMax, or one chunk
// if larger.
func (s *cowState) runBytes() int64 { return max(s.chunkBytes, copyRunMax) }

// initBufs sets up the copy buffer pools. Most copies are of one chunk (a
// 4 KiB write, a fault): they take a chunk-sized buffer, so that a pool
// emptied by a garbage collection costs a chunk to refill, not a run.
func (s *cowState) initBufs() {
	s.bufs.New = func() any { b := make([]byte, s.chunkBytes); return &b }
	s.runBufs.New = func() any { b := make([]byte, s.runBytes()); return &b }
}

// copyRuns copies each reserved exception's origin chunk into its COW
// chunk, a run of chunks reserved in a row at a time (as one write's
// chunks, or one NBD burst's, are): one write into the COW per run, and
// one read of the origin per stretch of consecutive origin chunks in it.
// Each stretch read is passed to copied (if not nil) as a range of the
// origin.
func (s *cowState) copyRuns(pend []exstore.Exception, copied func(off, n int64)) error {
	most := int(s.runBytes() / s.chunkBytes)
	for len(pend) > 0 {
		k := runOf(pend[:min(len(pend), most)], func(prev, next exstore.Exception) bool {
			return next.New == prev.New+1 && s.whole(prev.Old)
		})
		if err := s.copyRun(pend[:k], copied); err != nil {
			return err
		}
		pend = pend[k:]
	}
	return nil
}

// runOf returns how many exceptions at the start of pend (at least one)
// form a run: each follows the one before it as follows says.
func runOf(pend []exstore.Exception, follows func(prev, next exstore.Exception) bool) int {
	k := 1
	for k < len(pend) && follows(pend[k-1], pend[k]) {
		k++
	}
	return k
}

// whole reports whether origin chunk c is a whole chunk (only the last
// one may be partial, and it ends a run).
func (s *cowState) whole(c exstore.Chunk) bool {
	_, n := s.originSpan(c)
	return n == s.chunkBytes
}

// copyRun copies the origin chunks of run, whose COW chunks follow one
// another, at most runBytes: through a buffer and the COW's file on
// tmpfs (fileCOW), else straight into the COW's memory where it can (one
// copy instead of two, through a buffer). The origin is read through its
// file where it has one (backing.FileReader: pread on a tmpfs origin),
// and its mapping is likely left untouched, whose first load would cost
// more than the read (see the origin's WriteAt for the write after).
func (s *cowState) copyRun(run []exstore.Exception, copied func(off, n int64)) error {
	to := run[0].New
	_, lastLen := s.originSpan(run[len(run)-1].Old)
	n := int64(len(run)-1)*s.chunkBytes + lastLen
	var dst []byte
	direct := false
	if s.cowMem != nil && s.cowFile == nil {
		if m, err := s.cowMem.DirectAccess(int64(to)*s.chunkBytes, n); err == nil && int64(len(m)) == n {
			dst, direct = m, true
		}
	}
	if !direct {
		pool := &s.bufs
		if n > s.chunkBytes {
			pool = &s.runBufs
		}
		bp := pool.Get().(*[]byte)
		defer pool.Put(bp)
		dst = (*bp)[:n]
	}
	for i := 0; i < len(run); {
		j := i + runOf(run[i:], func(prev, next exstore.Exception) bool { return next.Old == prev.Old+1 })
		off, _ := s.originSpan(run[i].Old)
		lastOff, lastLen := s.originSpan(run[j-1].Old)
		p := dst[int64(i)*s.chunkBytes : int64(i)*s.chunkBytes+lastOff+lastLen-off]
		var err error
		if direct {
			_, err = s.origin.ReadAt(p, off)
		} else {
			_, err = backing.ReadFileAt(s.origin, p, off)
		}
		if err != nil {
			return fmt.Errorf("copy origin chunks %d+%d to COW chunk %d: %w", run[i].Old, j-i, run[i].New, err)
		}
		if copied != nil {
			copied(off, int64(len(p)))
		}
		i = j
	}
	if direct {
		return nil
	}
	if _, err := s.writeFresh(dst, int64(to)*s.chunkBytes); err != nil {
		return fmt.Errorf("copy origin chunks to COW chunks %d+%d: %w", to, len(run), err)
	}
	return nil
}

// writeFresh writes p at off of a COW chunk that was just reserved: through
// the COW's file where it has one (fileCOW), as copyRun fills it, since
// the daemon's mapping of a fresh chunk is untouched.
func (s *cowState) writeFresh(p []byte, off int64) (int, error) {
	if s.cowFile != nil {
		return s.cowFile.WriteFileAt(p, off)
	}
	return s.cow.WriteAt(p, off)
}

// ensure gives every chunk in chunks an exception: it reserves a COW
// chunk for each that lacks one, fills them all with fill(pend), then
// commits them together. It holds the chunks' locks throughout, so
// snapshot reads of them from the origin have drained and none start
// until the exceptions are in the table. Chunks in increasing order are
// reserved in increasing order, so fill sees runs (copyRuns).
func (s *cowState) ensure(chunks []exstore.Chunk, fill func(pend []exstore.Exception) error) error {
	held := s.lockChunks(chunks)
	defer s.unlockStripes(held)
	var buf [4]exstore.Exception
	pend := buf[:0]
	for _, c := range chunks {
		if _, ok := s.lookup(c); ok {
			continue
		}
		to, err := s.prepare()
		if err != nil {
			return err
		}
		s.ahead.used(int64(to+1) * s.chunkBytes)
		pend = append(pend, exstore.Exception{Old: c, New: to})
	}
	if len(pend) == 0 {
		return nil
	}
	if err := fill(pend); err != nil {
		return err
	}
	if err := s.commit(pend); err != nil {
		return err
	}
	s.mu.Lock()
	for _, e := range pend {
		if _, dup := s.exceptions[e.Old]; !dup {
			s.order = append(s.order, e.Old)
		}
		s.exceptions[e.Old] = e.New
	}
	s.mu.Unlock()
	return nil
}

// commit commits exceptions so that the store writes them in one metadata
// batch: in one call where the store offers it, else concurrently.
func (s *cowState) commit(pend []exstore.Exception) error {
	if bc, ok := s.store.(exstore.BatchCommitter); ok {
		return bc.CommitBatch(pend)
	}
	if len(pend) <= 1 {
		if len(pend) == 1 {
			return s.store.Commit(pend[0])
		}
		return nil
	}
	errs := make([]error, len(pend))
	var wg sync.WaitGroup
	for i, e := range pend {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.store.Commit(e)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// copyOut is the origin's copy-before-write for this snapshot: it never
// fails the origin write; a snapshot that cannot keep up is invalidated.
// It reports whether it copied a chunk.
func (s *cowState) copyOut(off, n int64) bool {
	copied := false
	s.copyOutRanges([]dm.Range{{Off: off, Len: n}}, func(int64, int64) { copied = true })
	return copied
}

// copyOutRanges is copyOut for many ranges at once: their chunks that
// lack an exception are copied and committed together. Each chunk it
// copies is passed to copied (if not nil) as a range of the origin.
func (s *cowState) copyOutRanges(rs []dm.Range, copied func(off, n int64)) {
	if !s.active.Load() || !s.valid.Load() || s.merging.Load() {
		return
	}
	s.copying.RLock()
	defer s.copying.RUnlock()
	if s.closed {
		return // removed since the origin listed it
	}
	var buf [4]exstore.Chunk
	missing := buf[:0]
	for _, r := range rs {
		first, last := s.chunks(r.Off, r.Len)
		missing = s.missing(first, last, missing)
	}
	if len(rs) > 1 {
		// Ranges may share chunks; ensure must see each once.
		slices.Sort(missing)
		missing = slices.Compact(missing)
	}
	if len(missing) == 0 {
		return
	}
	if err := s.ensure(missing, func(pend []exstore.Exception) error { return s.copyRuns(pend, copied) }); err != nil {
		s.invalidate(err)
	}
}

// invalidate marks the snapshot invalid on disk and in memory, once.
func (s *cowState) invalidate(cause error) {
	s.invalidOnce.Do(func() {
		s.valid.Store(false)
		s.log.Error("invalidating snapshot", "origin", s.originName, "cause", cause)
		if err := s.store.Drop(); err != nil && !errors.Is(err, exstore.ErrInvalidated) {
			s.log.Error("could not record the invalidation on the COW device", "err", err)
		}
		s.triggerEvents()
	})
}

func (s *cowState) attach(key any, event func()) {
	s.evMu.Lock()
	s.events[key] = event
	s.evMu.Unlock()
}

func (s *cowState) detach(key any) {
	s.evMu.Lock()
	delete(s.events, key)
	s.evMu.Unlock()
}

// triggerEvents raises an event on the devices of the targets using s,
// but not on a snapshot handed over to snapshot-merge: its table has
// left the COW to the merge (the kernel's source holds the merge's unused
// store), so the merge's events are not its.
func (s *cowState) triggerEvents() {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	for key, ev := range s.events {
		if t, ok := key.(*snap); ok && t.handedOver() {
			continue
		}
		ev()
	}
}

// statusInfo is the snapshot's `dmsetup status` payload.
func (s *cowState) statusInfo() string { return s.usage().String() }
