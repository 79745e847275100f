package persistent

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// scanState is where a scan of the metadata areas ended.
type scanState struct {
	area      uint64        // the last area: the first one not full
	committed uint64        // records in it
	nextFree  exstore.Chunk // one past the highest new chunk, area chunks skipped
}

// scanner reads the metadata areas in order, as the kernel's
// read_exceptions does, and checks every record on the way: the kernel
// trusts them, but an exception pointing at the header, at an area or past
// the end of the device would make the snapshot return or overwrite the
// wrong data, so daxsnap refuses it.
type scanner struct {
	dev       backing.Device
	g         Geometry
	devChunks exstore.Chunk
	buf       []byte // one chunk; holds the last area read

	// record is called for every record in list order; an error stops the
	// scan and is returned as is.
	record func(area, index uint64, e exstore.Exception) error
	// areaDone, if set, is called after each area with its record count.
	areaDone func(area uint64, records uint64, full bool)

	used []uint64 // bitmap of new chunks seen, for duplicates
}

func (s *scanner) run() (scanState, error) {
	st := scanState{nextFree: 2}
	s.used = make([]uint64, (uint64(s.devChunks)+63)/64)
	for a := uint64(0); ; a++ {
		if err := s.readArea(a); err != nil {
			return st, err
		}
		n, err := s.records(a, &st)
		if err != nil {
			return st, err
		}
		full := n == s.g.ExceptionsPerArea
		if s.areaDone != nil {
			s.areaDone(a, n, full)
		}
		if !full {
			st.area, st.committed = a, n
			st.nextFree = s.g.SkipMetadata(st.nextFree)
			return st, nil
		}
	}
}

func (s *scanner) readArea(a uint64) error {
	loc := s.g.AreaLocation(a)
	if a > 0 && loc >= s.devChunks {
		return exstore.Corruptf("metadata area %d is full, so the list continues in area %d at chunk %d, but the COW device ends at chunk %d (%d sectors per chunk): the device was truncated or area %d is damaged",
			a-1, a, loc, s.devChunks, s.g.Chunk, a-1)
	}
	if _, err := s.dev.ReadAt(s.buf, s.g.Offset(loc)); err != nil {
		return fmt.Errorf("read metadata area %d at chunk %d (byte %d): %w", a, loc, s.g.Offset(loc), err)
	}
	return nil
}

// records walks the records of area a (in s.buf) up to the end marker and
// returns how many there are.
func (s *scanner) records(a uint64, st *scanState) (uint64, error) {
	for i := uint64(0); i < s.g.ExceptionsPerArea; i++ {
		e := getRecord(s.buf, i)
		if e.New == 0 {
			return i, nil
		}
		if err := s.check(a, i, e); err != nil {
			return i, err
		}
		if e.New >= st.nextFree {
			st.nextFree = e.New + 1
		}
		if err := s.record(a, i, e); err != nil {
			return i, err
		}
	}
	return s.g.ExceptionsPerArea, nil
}

func (s *scanner) check(a, i uint64, e exstore.Exception) error {
	where := func() string {
		loc := s.g.AreaLocation(a)
		return fmt.Sprintf("metadata area %d (chunk %d) record %d at byte %d: new_chunk %d",
			a, loc, i, s.g.Offset(loc)+int64(i*recordSize)+8, e.New)
	}
	if e.New >= s.devChunks {
		return exstore.Corruptf("%s is beyond the end of the COW device (%d chunks of %d sectors): the exception list is damaged or the device was truncated",
			where(), s.devChunks, s.g.Chunk)
	}
	if ma, ok := s.g.AreaAt(e.New); ok {
		return exstore.Corruptf("%s is metadata area %d, not a data chunk", where(), ma)
	}
	w, bit := uint64(e.New)/64, uint64(1)<<(uint64(e.New)%64)
	if s.used[w]&bit != 0 {
		return exstore.Corruptf("%s is already used by an earlier exception: two origin chunks cannot share a COW chunk", where())
	}
	s.used[w] |= bit
	return nil
}
