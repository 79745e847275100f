package storetest

import (
	"errors"
	"testing"

	"github.com/daxsnap/daxsnap/internal/exstore"
)

// checkMerge commits runs of consecutive chunks, then merges everything
// back, comparing every PrepareMerge with the model and reopening at random.
func checkMerge(t testing.TB, f Factory) {
	const chunk, chunks = 1, 200
	dev := NewCrashDev("merge.cow", chunks*512)
	s, _ := mustOpen(t, f, dev, chunk)
	defer func() { s.Close() }()
	if !f.Merge {
		if _, err := add(s, dev, 7); err != nil {
			t.Fatal(err)
		}
		_, _, err := s.PrepareMerge()
		wantErr(t, "PrepareMerge on a store that cannot merge", err, exstore.ErrMergeUnsupported)
		wantErr(t, "CommitMerge on a store that cannot merge", s.CommitMerge(1), exstore.ErrMergeUnsupported)
		return
	}
	epa := 0
	if f.RecordsPerArea != nil {
		epa = f.RecordsPerArea(chunk)
	}
	rng := f.rng(t)
	var recs []exstore.Exception
	for base := 0; len(recs) < 120; {
		n := 1 + rng.IntN(8)
		for j := range n {
			e, err := add(s, dev, exstore.Chunk(base+j))
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, e)
		}
		base += n + rng.IntN(3)
	}

	for step := 0; ; step++ {
		if step > 2*len(recs)+10 && step > 300 {
			t.Fatalf("merge does not finish after %d steps; %d exceptions left", step, len(recs))
		}
		if f.Persistent && rng.IntN(6) == 0 {
			s.Close()
			var got []exstore.Exception
			s, got = mustOpen(t, f, dev, chunk)
			if err := sameList(got, recs); err != nil {
				t.Fatalf("merge step %d, reopen: %v", step, err)
			}
		}
		last, n, err := s.PrepareMerge()
		if err != nil {
			t.Fatalf("merge step %d: PrepareMerge: %v", step, err)
		}
		if len(recs) == 0 {
			if n != 0 {
				t.Fatalf("PrepareMerge on an empty store returned %v, n=%d; want n=0", last, n)
			}
			break
		}
		if want, wantN := recs[len(recs)-1], mergeRun(recs, epa); last != want || n != wantN {
			t.Fatalf("merge step %d: PrepareMerge = %v, %d; want %v, %d (%d exceptions left, %d per area)",
				step, last, n, want, wantN, len(recs), epa)
		}
		if step == 0 {
			checkMergingRefuses(t, s, n)
		}
		if err := checkData(dev, chunk, recs[len(recs)-n:]); err != nil {
			t.Fatalf("merge step %d: %v", step, err)
		}
		k := n
		if rng.IntN(3) == 0 {
			k = 1 + rng.IntN(n)
		}
		if err := s.CommitMerge(k); err != nil {
			t.Fatalf("merge step %d: CommitMerge(%d): %v", step, k, err)
		}
		recs = recs[:len(recs)-k]
	}
	if alloc, _, meta := s.Usage(); alloc != meta {
		t.Errorf("finished merge: Usage allocated %d, metadata %d; they must be equal (that is how userspace sees the end)", alloc, meta)
	}
	if !f.Persistent {
		return
	}
	s.Close()
	var got []exstore.Exception
	s, got = mustOpen(t, f, dev, chunk)
	if len(got) != 0 {
		t.Errorf("reopen after a finished merge: %d exceptions left, first %v", len(got), got[0])
	}
}

func checkMergingRefuses(t testing.TB, s exstore.Store, n int) {
	t.Helper()
	if _, err := s.Prepare(); !errors.Is(err, exstore.ErrMerging) {
		t.Errorf("Prepare while merging: got %v, want ErrMerging", err)
	}
	wantErr(t, "Commit while merging", s.Commit(exstore.Exception{Old: 1 << 30, New: 5}), exstore.ErrMerging)
	if err := s.CommitMerge(n + 1); err == nil {
		t.Errorf("CommitMerge(%d) after PrepareMerge returned a run of %d: succeeded, want an error", n+1, n)
	}
	if err := s.CommitMerge(-1); err == nil {
		t.Errorf("CommitMerge(-1) succeeded, want an error")
	}
}

// mergeRun is the model of PrepareMerge's n: the exceptions ending with
// the last one that are consecutive in old and new, within its area.
func mergeRun(recs []exstore.Exception, epa int) int {
	last := len(recs) - 1
	start := 0
	if epa > 0 {
		start = last / epa * epa
	}
	n := 1
	for last-n >= start {
		e, l, d := recs[last-n], recs[last], exstore.Chunk(n)
		if e.Old+d != l.Old || e.New+d != l.New {
			break
		}
		n++
	}
	return n
}
