package snapshot

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/exstore"
)

// TestLockChunks: the stripes of the chunks (two chunks may share one)
// are write-locked, no others, until unlockStripes; and it allocates
// nothing, as it runs on every first write (the map, list and closure it
// used made 3+ allocations each).
func TestLockChunks(t *testing.T) {
	var s cowState
	chunks := []exstore.Chunk{3, 3 + lockStripes, 70, 255, 1000}
	held := s.lockChunks(chunks)
	want := map[int]bool{}
	for _, c := range chunks {
		want[int(c%lockStripes)] = true
	}
	for i := range s.locks {
		if s.locks[i].TryRLock() {
			s.locks[i].RUnlock()
			if want[i] {
				t.Errorf("stripe %d is not locked", i)
			}
		} else if !want[i] {
			t.Errorf("stripe %d is locked, though no chunk maps to it", i)
		}
	}
	s.unlockStripes(held)
	for i := range s.locks {
		if !s.locks[i].TryLock() {
			t.Fatalf("stripe %d still locked after unlockStripes", i)
		}
		s.locks[i].Unlock()
	}
	allocs := testing.AllocsPerRun(100, func() {
		s.unlockStripes(s.lockChunks(chunks[:1]))
	})
	if allocs != 0 {
		t.Errorf("lockChunks + unlockStripes made %v allocations, want 0", allocs)
	}
}
