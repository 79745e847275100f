package persistent

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
)

// TestStore_Model runs random sequences of commits, merges, reopens and
// crashes against a model that is a plain list of exceptions in commit
// order; rapid shrinks a failing sequence to a short one.
func TestStore_Model(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		m := &model{dev: storetest.NewCrashDev("model.cow", modelChunks*512)}
		m.open(rt)
		rt.Repeat(map[string]func(*rapid.T){
			"add": m.add,
			"addMany": func(rt *rapid.T) {
				for range rapid.IntRange(1, 40).Draw(rt, "count") {
					m.add(rt)
				}
			},
			"reopen": m.reopen,
			"crash":  m.crash,
			"merge":  m.merge,
			"":       m.check,
		})
		m.s.Close()
	})
}

const (
	modelEPA    = 32 // records per area with 1-sector chunks
	modelChunks = 200
)

type model struct {
	dev     *storetest.CrashDev
	s       *Store
	recs    []exstore.Exception
	nextOld exstore.Chunk
	merging bool
}

func (m *model) open(rt *rapid.T) {
	s, err := Open(m.dev, Options{ChunkSize: 1})
	if err != nil {
		rt.Fatal(err)
	}
	var got []exstore.Exception
	if err := s.Load(func(e exstore.Exception) error { got = append(got, e); return nil }); err != nil {
		rt.Fatal(err)
	}
	if !slices.Equal(got, m.recs) {
		rt.Fatalf("loaded %v\nwant %v", got, m.recs)
	}
	m.s, m.merging = s, false
	buf := make([]byte, 512)
	for _, e := range got {
		m.dev.ReadAt(buf, int64(e.New)*512)
		if !bytes.Equal(buf, modelData(e.Old)) {
			rt.Fatalf("COW chunk %d does not hold the data of %v", e.New, e)
		}
	}
	if _, _, meta := s.Usage(); meta != exstore.Sector(len(m.recs)/modelEPA+2) {
		rt.Fatalf("after load, metadata %d sectors with %d exceptions; want %d", meta, len(m.recs), len(m.recs)/modelEPA+2)
	}
}

func modelData(old exstore.Chunk) []byte {
	return bytes.Repeat([]byte{byte(old), byte(old >> 8), 0xa5, 0x5a}, 128)
}

func (m *model) add(rt *rapid.T) {
	// Mostly consecutive origin chunks, so merges find runs.
	m.nextOld += exstore.Chunk(rapid.SampledFrom([]int{1, 1, 1, 2, 5}).Draw(rt, "oldStep"))
	c, err := m.s.Prepare()
	switch {
	case m.merging:
		if !errors.Is(err, exstore.ErrMerging) {
			rt.Fatalf("Prepare while merging: %v, want ErrMerging", err)
		}
		return
	case errors.Is(err, exstore.ErrNoSpace):
		return
	case err != nil:
		rt.Fatal(err)
	}
	e := exstore.Exception{Old: m.nextOld, New: c}
	if _, err := m.dev.WriteAt(modelData(e.Old), int64(c)*512); err != nil {
		rt.Fatal(err)
	}
	if err := m.s.Commit(e); err != nil {
		rt.Fatal(err)
	}
	m.recs = append(m.recs, e)
}

func (m *model) reopen(rt *rapid.T) {
	m.s.Close()
	m.open(rt)
}

// crash keeps only what was flushed: every acknowledged commit and merge.
func (m *model) crash(rt *rapid.T) {
	clone := m.dev.CrashClone(nil)
	m.s.Close()
	m.dev = clone
	m.open(rt)
}

func (m *model) merge(rt *rapid.T) {
	last, n, err := m.s.PrepareMerge()
	if err != nil {
		rt.Fatal(err)
	}
	m.merging = true
	if len(m.recs) == 0 {
		if n != 0 {
			rt.Fatalf("PrepareMerge on an empty store: %v, %d", last, n)
		}
		return
	}
	wantN := 1
	for l := len(m.recs) - 1; l-wantN >= l/modelEPA*modelEPA; wantN++ {
		e, d := m.recs[l-wantN], exstore.Chunk(wantN)
		if e.Old+d != last.Old || e.New+d != last.New {
			break
		}
	}
	if last != m.recs[len(m.recs)-1] || n != wantN {
		rt.Fatalf("PrepareMerge = %v, %d; want %v, %d", last, n, m.recs[len(m.recs)-1], wantN)
	}
	k := rapid.IntRange(0, n).Draw(rt, "merged")
	if err := m.s.CommitMerge(k); err != nil {
		rt.Fatal(err)
	}
	m.recs = m.recs[:len(m.recs)-k]
}

func (m *model) check(rt *rapid.T) {
	alloc, total, meta := m.s.Usage()
	if total != modelChunks || meta > alloc || alloc > total {
		rt.Fatalf("Usage = %d/%d %d", alloc, total, meta)
	}
	if m.merging && len(m.recs) == 0 && alloc != meta {
		rt.Fatalf("merge finished but Usage = %d/%d %d: allocated must equal metadata", alloc, total, meta)
	}
}
