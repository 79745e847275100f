package persistent

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// Options configure Open.
type Options struct {
	// ChunkSize is the table's chunk size in sectors. 0 means the default:
	// exstore.DefaultChunkSize, or the COW device's logical block size if
	// that is larger. The chunk size recorded in an existing store's header
	// overrides it, with a warning, as in the kernel.
	ChunkSize exstore.Sector
	// Overflow is the O of store type "PO": userspace understands the
	// Overflow status. It only changes Status; the snapshot target acts on it.
	Overflow bool
	// OriginLogicalBlockSize is the origin's logical block size in bytes; the
	// chunk size must be a multiple of it. 0 means 512.
	OriginLogicalBlockSize int
	// Logger receives warnings; nil means slog.Default().
	Logger *slog.Logger
}

// Store is a persistent exception store on a COW device. Create it with
// Open; it implements exstore.Store.
//
// Group commit: a Commit that finds no metadata write in progress becomes
// the writer for its own exception; commits arriving meanwhile queue in
// the open batch. When the writer finishes, it hands the role to one
// committer of the open batch, which writes all of them at once (one area
// write, two flushes, more if the batch spans areas). No committer writes
// more than one batch, so none is starved by a steady stream of others.
//
// Locking: ioMu (metadata I/O and the area buffer) is taken before mu
// (counters, queue, flags); mu is never held during I/O.
type Store struct {
	dev       backing.Device
	log       *slog.Logger
	overflow  bool
	g         Geometry
	devChunks exstore.Chunk
	fresh     bool // the header's magic was 0: Load creates the store

	// ioMu serialises metadata I/O and guards area, the current metadata
	// area as it is on disk, or is about to be.
	ioMu sync.Mutex
	area []byte

	mu          sync.Mutex // guards the fields below; never held during I/O
	loaded      bool
	merging     bool
	closed      bool
	valid       bool
	currentArea uint64 // index of the area records go to (changed under ioMu too)
	committed   uint64 // records in it (changed under ioMu too)
	accepted    uint64 // records written or queued since the first area
	nextFree    exstore.Chunk
	mergeRun    int    // what CommitMerge may still forget
	writing     bool   // a committer is writing a batch
	open        *batch // commits waiting for the next metadata write
	inflight    sync.WaitGroup
}

// batch is a group of commits that share one metadata write: the commits
// that arrive while another batch is being written.
type batch struct {
	recs []exstore.Exception
	done chan struct{} // closed when written; err is set before
	lead chan struct{} // a token here tells one waiter to write the batch
	err  error
}

func newBatch() *batch {
	return &batch{done: make(chan struct{}), lead: make(chan struct{}, 1)}
}

var (
	_ exstore.Store          = (*Store)(nil)
	_ exstore.BatchCommitter = (*Store)(nil)
	_ exstore.Grower         = (*Store)(nil)
)

// Open reads the header of the COW device dev and returns a store ready for
// Load. A device whose first four bytes are zero gets a new store when Load
// is called; any other magic number than "SnAp" is refused as corrupt. The
// store does not take ownership of dev.
func Open(dev backing.Device, opts Options) (*Store, error) {
	s, err := open(dev, opts)
	if err != nil {
		return nil, fmt.Errorf("open persistent exception store on %s: %w", dev.Path(), err)
	}
	return s, nil
}

func open(dev backing.Device, opts Options) (*Store, error) {
	s := &Store{dev: dev, log: opts.Logger, overflow: opts.Overflow, valid: true, nextFree: 2, open: newBatch()}
	if s.log == nil {
		s.log = slog.Default()
	}
	lbs, originLBS := dev.LogicalBlockSize(), opts.OriginLogicalBlockSize
	chunk := opts.ChunkSize
	if chunk != 0 {
		if err := exstore.ValidateChunkSize(chunk, lbs, originLBS); err != nil {
			return nil, fmt.Errorf("table chunk size: %w", err)
		}
	} else {
		chunk = max(exstore.DefaultChunkSize, exstore.Sector(lbs/exstore.SectorSize))
	}
	hdr, err := readHeader(dev)
	if err != nil {
		return nil, err
	}
	if hdr.Magic == 0 {
		s.fresh = true
	} else {
		disk, err := checkHeader(hdr, lbs, originLBS)
		if err != nil {
			return nil, err
		}
		if opts.ChunkSize != 0 && disk != opts.ChunkSize {
			s.log.Warn("chunk size in COW device metadata overrides the table's",
				"device", dev.Path(), "metadata_chunk_size", disk, "table_chunk_size", opts.ChunkSize)
		}
		chunk = disk
		s.valid = hdr.Valid != 0
	}
	s.g = NewGeometry(chunk)
	s.devChunks = exstore.Chunk(dev.Size() / s.g.ChunkBytes)
	if s.devChunks < 2 {
		if s.fresh {
			return nil, fmt.Errorf("COW device is %d bytes, smaller than 2 chunks of %d sectors (header and first metadata area), and data needs more: use a larger device or a smaller chunk size",
				dev.Size(), chunk)
		}
		return nil, exstore.Corruptf("COW device is %d bytes, smaller than the 2 chunks of %d sectors (header chunk_size at byte %d) its header and first metadata area take: the device was truncated or the header is damaged",
			dev.Size(), chunk, offChunkSize)
	}
	s.area = make([]byte, s.g.ChunkBytes)
	return s, nil
}

// Grow takes in a COW device that grew (see exstore.Grower). It waits
// for metadata I/O in progress, so the scanner and the commit path each
// see one size; a smaller size is ignored.
func (s *Store) Grow() {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devChunks = max(s.devChunks, exstore.Chunk(s.dev.Size()/s.g.ChunkBytes))
}

// readHeader reads the first logical block of dev.
func readHeader(dev backing.Device) (Header, error) {
	n := max(dev.LogicalBlockSize(), exstore.SectorSize)
	if dev.Size() < int64(n) {
		return Header{}, fmt.Errorf("COW device is %d bytes: too small to hold a header (%d bytes)", dev.Size(), n)
	}
	buf := make([]byte, n)
	if _, err := dev.ReadAt(buf, 0); err != nil {
		return Header{}, fmt.Errorf("read header (chunk 0): %w", err)
	}
	return decodeHeader(buf), nil
}

// checkHeader validates an existing store's header and returns its chunk
// size. The order of checks names the most basic problem first.
func checkHeader(h Header, lbs, originLBS int) (exstore.Sector, error) {
	if h.Magic != Magic {
		return 0, exstore.Corruptf("header byte %d: magic %#08x is not %#08x (\"SnAp\"): this is not a dm-snapshot COW device, or its header is damaged; to start a new snapshot on it, zero its first chunk",
			offMagic, h.Magic, Magic)
	}
	if h.Version != DiskVersion {
		return 0, fmt.Errorf("%w: header byte %d: version %d; only version %d exists and the kernel reads no other either",
			exstore.ErrUnsupportedVersion, offVersion, h.Version, DiskVersion)
	}
	disk := exstore.Sector(h.ChunkSize)
	if err := exstore.ValidateChunkSize(disk); err != nil {
		return 0, exstore.Corruptf("header byte %d: chunk_size: %w", offChunkSize, err)
	}
	if err := exstore.ValidateChunkSize(disk, lbs, originLBS); err != nil {
		return 0, fmt.Errorf("header byte %d: chunk_size %d sectors cannot be used on these devices (was the COW device copied from one with smaller blocks?): %w",
			offChunkSize, disk, err)
	}
	return disk, nil
}

// Load reads the exceptions, or creates a new store if the header's magic
// is 0. See exstore.Store.
func (s *Store) Load(fn func(e exstore.Exception) error) error {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return exstore.ErrClosed
	case s.loaded:
		s.mu.Unlock()
		return exstore.ErrLoaded
	}
	valid, fresh := s.valid, s.fresh
	s.mu.Unlock()

	if !valid {
		s.setLoaded(scanState{nextFree: 2})
		return fmt.Errorf("load %s: %w: the header's valid field is 0 (the snapshot ran out of space or hit an I/O error); its contents cannot be recovered",
			s.dev.Path(), exstore.ErrInvalidated)
	}
	if fresh {
		if err := s.create(); err != nil {
			return fmt.Errorf("create persistent exception store on %s: %w", s.dev.Path(), err)
		}
		s.setLoaded(scanState{nextFree: 2})
		return nil
	}
	sc := scanner{
		dev: s.dev, g: s.g, devChunks: s.devChunks, buf: s.area,
		record: func(_, _ uint64, e exstore.Exception) error { return fn(e) },
	}
	st, err := sc.run()
	if err != nil {
		return fmt.Errorf("load persistent exception store on %s: %w", s.dev.Path(), err)
	}
	s.setLoaded(st)
	return nil
}

func (s *Store) setLoaded(st scanState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loaded = true
	s.currentArea, s.committed, s.nextFree = st.area, st.committed, st.nextFree
	s.accepted = st.area*s.g.ExceptionsPerArea + st.committed
}

// create writes a new, empty store: area 0 zeroed, then the header. Area 0
// is durable before the header is written, so a header on disk always has
// a clean area behind it even if the device started with garbage.
func (s *Store) create() error {
	loc := s.g.AreaLocation(0)
	if err := s.dev.WriteZeroes(s.g.Offset(loc), s.g.ChunkBytes); err != nil {
		return fmt.Errorf("zero metadata area 0 at chunk %d: %w", loc, err)
	}
	if err := s.dev.Flush(); err != nil {
		return fmt.Errorf("flush zeroed metadata area 0: %w", err)
	}
	return s.writeHeader(1)
}

// writeHeader writes chunk 0 (the header, then zeroes) and flushes.
func (s *Store) writeHeader(valid uint32) error {
	buf := make([]byte, s.g.ChunkBytes)
	Header{Magic: Magic, Valid: valid, Version: DiskVersion, ChunkSize: uint32(s.g.Chunk)}.encode(buf)
	if _, err := s.dev.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	if err := s.dev.Flush(); err != nil {
		return fmt.Errorf("flush header: %w", err)
	}
	return nil
}

// usable says why new exceptions cannot be taken, if they cannot. s.mu is held.
func (s *Store) usable() error {
	switch {
	case s.closed:
		return exstore.ErrClosed
	case !s.loaded:
		return exstore.ErrNotLoaded
	case s.merging:
		return exstore.ErrMerging
	case !s.valid:
		return exstore.ErrInvalidated
	}
	return nil
}

// Prepare reserves the next free data chunk. See exstore.Store.
func (s *Store) Prepare() (exstore.Chunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	c := s.nextFree
	if c >= s.devChunks {
		return 0, fmt.Errorf("%w: all %d chunks of %s are in use", exstore.ErrNoSpace, s.devChunks, s.dev.Path())
	}
	// Handing out the last data chunk before an area that does not fit on
	// the device would let the records fill the current area, which then
	// needs the next one zeroed: the kernel invalidates the snapshot there.
	if _, ok := s.g.AreaAt(c + 1); ok && c+1 == s.devChunks {
		return 0, fmt.Errorf("%w: all %d chunks of %s are in use (the last one would need a metadata area past the end)",
			exstore.ErrNoSpace, s.devChunks, s.dev.Path())
	}
	s.nextFree = s.g.SkipMetadata(c + 1)
	return c, nil
}

// Commit records e durably, sharing the metadata write with concurrent
// commits. See exstore.Store.
func (s *Store) Commit(e exstore.Exception) error {
	return s.CommitBatch([]exstore.Exception{e})
}

// CommitBatch commits es together: they join one metadata batch (with any
// commits queued meanwhile), so a caller with many exceptions at hand gets
// the group commit without needing a goroutine per exception. On an error
// the caller must treat every exception in es as not recorded.
func (s *Store) CommitBatch(es []exstore.Exception) error {
	if len(es) == 0 {
		return nil
	}
	s.mu.Lock()
	for _, e := range es {
		if err := s.admit(e); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	s.inflight.Add(1)
	defer s.inflight.Done()
	if !s.writing {
		// No commit is being written, so none waits (s.open is empty):
		// write es now, without a batch to wait on. Commits that arrive
		// meanwhile queue in s.open as ever.
		s.writing = true
		s.mu.Unlock()
		err := s.writeBatch(es)
		s.handOff()
		return err
	}
	b := s.open
	b.recs = append(b.recs, es...)
	s.mu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-b.lead:
	}
	s.lead(b)
	return b.err
}

// admit checks e and counts it as accepted. s.mu is held.
func (s *Store) admit(e exstore.Exception) error {
	if err := s.usable(); err != nil {
		return err
	}
	if e.New == 0 || e.New >= s.devChunks {
		return fmt.Errorf("commit exception %v: COW chunk %d is not a data chunk of %s (it has chunks 2 to %d)",
			e, e.New, s.dev.Path(), s.devChunks-1)
	}
	if a, ok := s.g.AreaAt(e.New); ok {
		return fmt.Errorf("commit exception %v: COW chunk %d holds metadata area %d, not data", e, e.New, a)
	}
	if (s.accepted+1)%s.g.ExceptionsPerArea == 0 {
		next := s.g.AreaLocation((s.accepted + 1) / s.g.ExceptionsPerArea)
		if next >= s.devChunks {
			return fmt.Errorf("%w: commit exception %v: it would fill metadata area %d, and the next area (chunk %d) does not fit on %s",
				exstore.ErrNoSpace, e, s.accepted/s.g.ExceptionsPerArea, next, s.dev.Path())
		}
	}
	s.accepted++
	if e.New >= s.nextFree {
		s.nextFree = s.g.SkipMetadata(e.New + 1)
	}
	return nil
}

// lead writes batch b, then hands the writer's role to one of the commits
// that queued up meanwhile, so no committer writes more than its own batch.
func (s *Store) lead(b *batch) {
	b.err = s.writeBatch(b.recs)
	close(b.done)
	s.handOff()
}

// handOff ends a write: the commits that queued up meanwhile (s.open), if
// any, get one of theirs to write them; else writing stops.
func (s *Store) handOff() {
	s.mu.Lock()
	next := s.open
	if len(next.recs) == 0 {
		s.writing = false
		s.mu.Unlock()
		return
	}
	s.open = newBatch()
	s.mu.Unlock()
	next.lead <- struct{}{}
}

// writeBatch appends recs to the metadata areas and makes them durable. A
// failure invalidates the store, as in the kernel: the records may or may
// not be on disk.
func (s *Store) writeBatch(recs []exstore.Exception) error {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	s.mu.Lock()
	valid, area, n := s.valid, s.currentArea, s.committed
	s.mu.Unlock()
	if !valid {
		return exstore.ErrInvalidated
	}
	for len(recs) > 0 {
		k := min(uint64(len(recs)), s.g.ExceptionsPerArea-n)
		for i := range k {
			putRecord(s.area, n+i, recs[i])
		}
		n, recs = n+k, recs[k:]
		if err := s.writeArea(area, n); err != nil {
			s.mu.Lock()
			s.valid = false
			s.mu.Unlock()
			return fmt.Errorf("commit exceptions to %s: %w", s.dev.Path(), err)
		}
		if n == s.g.ExceptionsPerArea {
			area, n = area+1, 0
			clear(s.area)
		}
		s.mu.Lock()
		s.currentArea, s.committed = area, n
		s.mu.Unlock()
	}
	return nil
}

// writeArea makes metadata area a, now in s.area with n records, durable:
// zero the next area if a is full, flush (data copied into COW chunks and
// the zeroed area reach the media before the records pointing at them),
// write, flush (the kernel's REQ_PREFLUSH|REQ_FUA).
func (s *Store) writeArea(a, n uint64) error {
	if n == s.g.ExceptionsPerArea {
		// admit made sure the next area fits on the device.
		next := s.g.AreaLocation(a + 1)
		if err := s.dev.WriteZeroes(s.g.Offset(next), s.g.ChunkBytes); err != nil {
			return fmt.Errorf("zero metadata area %d at chunk %d: %w", a+1, next, err)
		}
	}
	if err := s.dev.Flush(); err != nil {
		return fmt.Errorf("flush COW data before metadata area %d: %w", a, err)
	}
	loc := s.g.AreaLocation(a)
	if _, err := s.dev.WriteAt(s.area, s.g.Offset(loc)); err != nil {
		return fmt.Errorf("write metadata area %d at chunk %d: %w", a, loc, err)
	}
	if err := s.dev.Flush(); err != nil {
		return fmt.Errorf("flush metadata area %d: %w", a, err)
	}
	return nil
}
