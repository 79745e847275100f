package state_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/state"
)

// Ensure that finished merges are remembered, the oldest pushed out
// beyond KeepMerges, and that DeleteMerge forgets one.
func TestStore_merges(t *testing.T) {
	s := open(t, t.TempDir())
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range state.KeepMerges + 3 {
		m := state.Merge{Snapshot: fmt.Sprintf("s%d", i), Origin: "vol", FinishedAt: t0.Add(time.Duration(i) * time.Minute)}
		if err := s.PutMerge(m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range state.KeepMerges + 3 {
		m, ok, err := s.Merge(fmt.Sprintf("s%d", i))
		if err != nil || ok != (i >= 3) || ok && !m.FinishedAt.Equal(t0.Add(time.Duration(i)*time.Minute)) {
			t.Fatalf("merge s%d: %+v, %v, %v; want it kept iff one of the last %d", i, m, ok, err, state.KeepMerges)
		}
	}
	if err := s.DeleteMerge("s5"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Merge("s5"); ok || err != nil {
		t.Fatalf("s5 after DeleteMerge: %v, %v", ok, err)
	}
}
