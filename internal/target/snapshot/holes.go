package snapshot

import (
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

var _ dm.HoleFinder = (*snap)(nil)

// maxHoleRun bounds the chunks one Allocated call looks at, and so how
// long it holds the chunk locks.
const maxHoleRun = 4 * lockStripes

// Allocated gives NBD's base:allocation and SEEK_HOLE real holes on a
// snapshot: a chunk with an exception is data (the COW holds it), a run
// of chunks without one is what the origin says of them. The origin is
// asked with every chunk lock of the snapshot read-held: copy-out takes
// a chunk's lock before it records an exception, and the origin write
// waits for that, so no chunk without an exception can change on the
// origin (or gain an exception) under the question; a chunk the origin
// calls a hole then reads as zeroes from the snapshot too. Anything it
// cannot tell (invalid, merging, an origin without a map) is data.
func (t *snap) Allocated(off, n int64) (bool, int64, error) {
	if n <= 0 || t.usable() != nil || t.merger != nil {
		return true, n, nil
	}
	s := t.state
	cb := s.chunkBytes
	end := off + n
	runEnd := func(mapped bool) int64 {
		pos := (off/cb + 1) * cb
		for limit := off + maxHoleRun*cb; pos < end && pos < limit; pos += cb {
			if _, ok := s.exceptions[exstore.Chunk(pos/cb)]; ok != mapped {
				break
			}
		}
		return min(pos, end)
	}
	hf, ok := t.origin.Device.(dm.HoleFinder)
	if !ok {
		return true, n, nil
	}
	for i := range s.locks {
		s.locks[i].RLock()
	}
	defer func() {
		for i := range s.locks {
			s.locks[i].RUnlock()
		}
	}()
	s.mu.RLock()
	_, mapped := s.exceptions[exstore.Chunk(off/cb)]
	stop := runEnd(mapped)
	s.mu.RUnlock()
	if mapped {
		return true, stop - off, nil
	}
	data, length, err := hf.Allocated(off, stop-off)
	if err != nil || length <= 0 || length > stop-off {
		return true, stop - off, nil
	}
	return data, length, nil
}
