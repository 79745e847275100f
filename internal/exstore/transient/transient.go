// Package transient implements the transient exception store (table store
// type N), like the kernel's dm-snap-transient.c: nothing about exceptions
// is written to the COW device, which only holds the copied chunks, handed
// out linearly from chunk 0. The exception table lives in the snapshot's
// memory and is lost when the table is unloaded, so Load never reports
// anything, Commit succeeds at once, and merging is impossible.
package transient

import (
	"fmt"
	"sync"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// Options configure New.
type Options struct {
	// ChunkSize in sectors. Unlike a persistent store, a transient one has
	// no default: 0 is an error, as in the kernel.
	ChunkSize exstore.Sector
	// OriginLogicalBlockSize is the origin's logical block size in bytes; the
	// chunk size must be a multiple of it. 0 means 512.
	OriginLogicalBlockSize int
}

// Store is a transient exception store; it implements exstore.Store.
type Store struct {
	dev       backing.Device
	chunk     exstore.Sector
	devChunks exstore.Chunk

	mu       sync.Mutex
	loaded   bool
	closed   bool
	valid    bool
	nextFree exstore.Chunk
}

var (
	_ exstore.Store  = (*Store)(nil)
	_ exstore.Grower = (*Store)(nil)
)

// Grow takes in a COW device that grew (see exstore.Grower).
func (s *Store) Grow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devChunks = max(s.devChunks, exstore.Chunk(s.dev.Size()/s.chunk.Bytes()))
}

// New returns a transient store whose data chunks live on dev. The store
// does not take ownership of dev.
func New(dev backing.Device, opts Options) (*Store, error) {
	if opts.ChunkSize == 0 {
		return nil, fmt.Errorf("transient exception store on %s: %w: chunk size not set (a transient store has no default; give one, e.g. 8 for 4 KiB)",
			dev.Path(), exstore.ErrInvalidChunkSize)
	}
	if err := exstore.ValidateChunkSize(opts.ChunkSize, dev.LogicalBlockSize(), opts.OriginLogicalBlockSize); err != nil {
		return nil, fmt.Errorf("transient exception store on %s: %w", dev.Path(), err)
	}
	return &Store{
		dev:       dev,
		chunk:     opts.ChunkSize,
		devChunks: exstore.Chunk(dev.Size() / opts.ChunkSize.Bytes()),
		valid:     true,
	}, nil
}

// Load reports nothing: a transient store starts empty every time.
func (s *Store) Load(fn func(e exstore.Exception) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return exstore.ErrClosed
	case s.loaded:
		return exstore.ErrLoaded
	}
	s.loaded = true
	return nil
}

func (s *Store) usable() error {
	switch {
	case s.closed:
		return exstore.ErrClosed
	case !s.loaded:
		return exstore.ErrNotLoaded
	case !s.valid:
		return exstore.ErrInvalidated
	}
	return nil
}

// Prepare hands out the next chunk of the COW device.
func (s *Store) Prepare() (exstore.Chunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	if s.nextFree >= s.devChunks {
		return 0, fmt.Errorf("%w: all %d chunks of %s are in use", exstore.ErrNoSpace, s.devChunks, s.dev.Path())
	}
	c := s.nextFree
	s.nextFree++
	return c, nil
}

// Commit accepts e at once: nothing needs to be durable, since the
// snapshot's contents do not survive the table anyway.
func (s *Store) Commit(e exstore.Exception) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if e.New >= s.nextFree {
		return fmt.Errorf("commit exception %v: COW chunk %d of %s was not handed out by Prepare (next free is %d)",
			e, e.New, s.dev.Path(), s.nextFree)
	}
	return nil
}

// PrepareMerge fails: transient snapshots cannot merge.
func (s *Store) PrepareMerge() (exstore.Exception, int, error) {
	return exstore.Exception{}, 0, fmt.Errorf("%w: transient snapshots (store type N) cannot merge: their exceptions do not survive the table swap a merge needs; use a persistent (P) snapshot",
		exstore.ErrMergeUnsupported)
}

// CommitMerge fails: transient snapshots cannot merge.
func (s *Store) CommitMerge(n int) error {
	_, _, err := s.PrepareMerge()
	return err
}

// Drop invalidates the store; there is nothing on disk to mark.
func (s *Store) Drop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return exstore.ErrClosed
	}
	s.valid = false
	return nil
}

// Usage reports the chunks handed out, the COW device size, and no metadata.
func (s *Store) Usage() (allocated, total, metadata exstore.Sector) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return exstore.Sector(s.nextFree) * s.chunk, exstore.Sector(s.dev.Size() / exstore.SectorSize), 0
}

// ChunkSize is the chunk size in sectors.
func (s *Store) ChunkSize() exstore.Sector { return s.chunk }

// Status returns "N <chunk>" for the table line and nothing for status.
func (s *Store) Status(kind exstore.StatusType) string {
	if kind != exstore.StatusTable {
		return ""
	}
	return fmt.Sprintf("N %d", s.chunk)
}

// Close releases the store; the COW device stays open.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
