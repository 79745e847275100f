package persistent

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/exstore"
)

// PrepareMerge returns the last exception not merged yet and the length of
// the consecutive run ending with it, within its metadata area. When the
// current area is empty it moves back to the previous, full, one. See
// exstore.Store.
func (s *Store) PrepareMerge() (exstore.Exception, int, error) {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return exstore.Exception{}, 0, exstore.ErrClosed
	case !s.loaded:
		s.mu.Unlock()
		return exstore.Exception{}, 0, exstore.ErrNotLoaded
	case !s.valid:
		s.mu.Unlock()
		return exstore.Exception{}, 0, exstore.ErrInvalidated
	}
	s.merging = true // from now on Prepare and Commit fail
	s.mu.Unlock()
	s.inflight.Wait() // commits admitted before that finish first

	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	s.mu.Lock()
	area, n := s.currentArea, s.committed
	s.mergeRun = 0
	s.mu.Unlock()
	if n == 0 {
		if area == 0 {
			return exstore.Exception{}, 0, nil
		}
		area--
		loc := s.g.AreaLocation(area)
		if _, err := s.dev.ReadAt(s.area, s.g.Offset(loc)); err != nil {
			return exstore.Exception{}, 0, fmt.Errorf("prepare merge: read metadata area %d at chunk %d of %s: %w", area, loc, s.dev.Path(), err)
		}
		n = s.g.ExceptionsPerArea
		s.mu.Lock()
		s.currentArea, s.committed = area, n
		s.mu.Unlock()
	}
	last := getRecord(s.area, n-1)
	if err := s.checkMergeRecord(area, n-1, last); err != nil {
		return exstore.Exception{}, 0, err
	}
	run := uint64(1)
	for ; run < n; run++ {
		e := getRecord(s.area, n-1-run)
		c := exstore.Chunk(run)
		if last.Old < c || last.New < c || e.Old != last.Old-c || e.New != last.New-c {
			break
		}
		if err := s.checkMergeRecord(area, n-1-run, e); err != nil {
			return exstore.Exception{}, 0, err
		}
	}
	s.mu.Lock()
	s.mergeRun = int(run)
	s.mu.Unlock()
	return last, int(run), nil
}

// checkMergeRecord re-checks a record read back from disk for merging: a
// damaged one must not make the target copy the header over the origin.
func (s *Store) checkMergeRecord(a, i uint64, e exstore.Exception) error {
	_, isArea := s.g.AreaAt(e.New)
	if e.New != 0 && e.New < s.devChunks && !isArea {
		return nil
	}
	loc := s.g.AreaLocation(a)
	return fmt.Errorf("prepare merge on %s: %w", s.dev.Path(), exstore.Corruptf(
		"metadata area %d (chunk %d) record %d at byte %d: new_chunk %d is not a data chunk (the device has %d chunks)",
		a, loc, i, s.g.Offset(loc)+int64(i*recordSize)+8, e.New, s.devChunks))
}

// CommitMerge clears the last n records of the current area and writes it
// durably. See exstore.Store.
func (s *Store) CommitMerge(n int) error {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	s.mu.Lock()
	var err error
	switch {
	case s.closed:
		err = exstore.ErrClosed
	case !s.valid:
		err = exstore.ErrInvalidated
	case !s.merging:
		err = errors.New("commit merge: PrepareMerge was not called")
	case n < 0 || n > s.mergeRun:
		err = fmt.Errorf("commit merge of %d exceptions: PrepareMerge left only %d to merge", n, s.mergeRun)
	}
	area, c := s.currentArea, s.committed
	s.mu.Unlock()
	if err != nil || n == 0 {
		return err
	}

	buf := make([]byte, len(s.area))
	copy(buf, s.area)
	clear(buf[(c-uint64(n))*recordSize : c*recordSize])
	loc := s.g.AreaLocation(area)
	if err := s.dev.Flush(); err != nil {
		return fmt.Errorf("commit merge: flush %s: %w", s.dev.Path(), err)
	}
	if _, err := s.dev.WriteAt(buf, s.g.Offset(loc)); err != nil {
		return fmt.Errorf("commit merge: write metadata area %d at chunk %d of %s: %w", area, loc, s.dev.Path(), err)
	}
	if err := s.dev.Flush(); err != nil {
		return fmt.Errorf("commit merge: flush metadata area %d of %s: %w", area, s.dev.Path(), err)
	}
	copy(s.area, buf)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.committed = c - uint64(n)
	s.mergeRun -= n
	// As in the kernel, next_free now only feeds Usage: set it to what it
	// would be had the exceptions been committed in allocation order, so a
	// finished merge shows allocated == metadata.
	s.nextFree = loc + exstore.Chunk(s.committed) + 1
	return nil
}

// Drop invalidates the store and writes a header with valid=0. See
// exstore.Store.
func (s *Store) Drop() error {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return exstore.ErrClosed
	}
	s.valid = false
	s.mu.Unlock()
	if err := s.writeHeader(0); err != nil {
		return fmt.Errorf("invalidate snapshot on %s: %w", s.dev.Path(), err)
	}
	return nil
}

// Usage reports, in sectors, the chunks in use (header, areas and data up to
// the next free chunk), the COW device size and the header and areas in use.
func (s *Store) Usage() (allocated, total, metadata exstore.Sector) {
	s.mu.Lock()
	defer s.mu.Unlock()
	allocated = exstore.Sector(s.nextFree) * s.g.Chunk
	total = exstore.Sector(s.dev.Size() / exstore.SectorSize)
	metadata = exstore.Sector(s.currentArea+2) * s.g.Chunk
	return allocated, total, metadata
}

// ChunkSize is the chunk size in sectors, as recorded on disk.
func (s *Store) ChunkSize() exstore.Sector { return s.g.Chunk }

// Status returns "P <chunk>" or "PO <chunk>" for the table line, and
// nothing for the status line.
func (s *Store) Status(kind exstore.StatusType) string {
	if kind != exstore.StatusTable {
		return ""
	}
	typ := exstore.Persistent
	if s.overflow {
		typ = exstore.PersistentOverflow
	}
	return fmt.Sprintf("%s %d", typ, s.g.Chunk)
}

// Close waits for commits in flight; later calls fail with
// exstore.ErrClosed. The COW device stays open.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.inflight.Wait()
	return nil
}
