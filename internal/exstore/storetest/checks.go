package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"testing"

	"github.com/daxsnap/daxsnap/internal/exstore"
)

var statusTable = regexp.MustCompile(`^[A-Z]+ ([0-9]+)$`)

// checkRoundTrip: the protocol order, distinct chunks, status and usage,
// reopen, Close.
func checkRoundTrip(t testing.TB, f Factory) {
	const chunk, chunks = 8, 64
	dev := NewCrashDev("roundtrip.cow", chunks*chunk*512)

	s, err := f.Open(dev, chunk)
	if err != nil {
		t.Fatalf("open a zeroed device: %v", err)
	}
	if _, err := s.Prepare(); !errors.Is(err, exstore.ErrNotLoaded) {
		t.Errorf("Prepare before Load: got %v, want ErrNotLoaded", err)
	}
	if err := s.Commit(exstore.Exception{Old: 1, New: 5}); !errors.Is(err, exstore.ErrNotLoaded) {
		t.Errorf("Commit before Load: got %v, want ErrNotLoaded", err)
	}
	n := 0
	if err := s.Load(func(exstore.Exception) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("Load of a new store: %d exceptions, error %v; want none", n, err)
	}
	wantErr(t, "second Load", s.Load(func(exstore.Exception) error { return nil }), exstore.ErrLoaded)
	if got := s.ChunkSize(); got != chunk {
		t.Errorf("ChunkSize = %d, want %d", got, chunk)
	}
	if m := statusTable.FindStringSubmatch(s.Status(exstore.StatusTable)); m == nil || m[1] != fmt.Sprint(chunk) {
		t.Errorf("Status(table) = %q, want \"<type> %d\"", s.Status(exstore.StatusTable), chunk)
	}
	if got := s.Status(exstore.StatusInfo); got != "" {
		t.Errorf("Status(info) = %q, want nothing (the target prints usage)", got)
	}

	var want []exstore.Exception
	seen := map[exstore.Chunk]bool{}
	for _, old := range distinctOlds(f.rng(t), 10) {
		e, err := add(s, dev, old)
		if err != nil {
			t.Fatal(err)
		}
		if seen[e.New] {
			t.Fatalf("Prepare returned COW chunk %d twice", e.New)
		}
		seen[e.New] = true
		want = append(want, e)
	}
	checkUsage(t, s, dev.Size(), len(want))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if _, err := s.Prepare(); !errors.Is(err, exstore.ErrClosed) {
		t.Errorf("Prepare after Close: got %v, want ErrClosed", err)
	}
	wantErr(t, "Commit after Close", s.Commit(exstore.Exception{Old: 1, New: 5}), exstore.ErrClosed)

	s, got := mustOpen(t, f, dev, chunk)
	defer s.Close()
	if !f.Persistent {
		want = nil
	}
	if err := sameList(got, want); err != nil {
		t.Errorf("reopen: %v", err)
	}
	if err := checkData(dev, chunk, got); err != nil {
		t.Error(err)
	}
}

func checkUsage(t testing.TB, s exstore.Store, size int64, committed int) {
	t.Helper()
	alloc, total, meta := s.Usage()
	chunk := s.ChunkSize()
	if total != exstore.Sector(size/512) {
		t.Errorf("Usage: total %d sectors, want the device size %d", total, size/512)
	}
	if alloc < exstore.Sector(committed)*chunk || alloc > total || meta > alloc || alloc%chunk != 0 || meta%chunk != 0 {
		t.Errorf("Usage = %d/%d %d with %d exceptions of %d sectors: want whole chunks, allocated >= data, metadata <= allocated <= total",
			alloc, total, meta, committed, chunk)
	}
}

// checkBadChunk: a commit naming a chunk outside the device is refused and
// leaves the store working.
func checkBadChunk(t testing.TB, f Factory) {
	const chunk, chunks = 1, 40
	dev := NewCrashDev("badchunk.cow", chunks*512)
	s, _ := mustOpen(t, f, dev, chunk)
	defer s.Close()
	for _, c := range []exstore.Chunk{chunks, chunks + 7, 1 << 62} {
		if err := s.Commit(exstore.Exception{Old: 3, New: c}); err == nil {
			t.Errorf("Commit of COW chunk %d on a %d-chunk device succeeded", c, chunks)
		}
	}
	e, err := add(s, dev, 3)
	if err != nil {
		t.Fatalf("after refused commits: %v", err)
	}
	s.Close()
	if !f.Persistent {
		return
	}
	s, got := mustOpen(t, f, dev, chunk)
	defer s.Close()
	if err := sameList(got, []exstore.Exception{e}); err != nil {
		t.Errorf("reopen: %v", err)
	}
}

// checkNoSpace fills devices of awkward sizes until ErrNoSpace, commits
// everything, and reopens.
func checkNoSpace(t testing.TB, f Factory) {
	for _, chunks := range []int{34, 35, 70} {
		const chunk = 1
		dev := NewCrashDev(fmt.Sprintf("full%d.cow", chunks), int64(chunks)*512)
		s, _ := mustOpen(t, f, dev, chunk)
		var want []exstore.Exception
		for i := 0; ; i++ {
			if i > chunks {
				t.Fatalf("%d chunks: Prepare handed out more chunks than the device has", chunks)
			}
			e, err := add(s, dev, exstore.Chunk(1000+i))
			if errors.Is(err, exstore.ErrNoSpace) {
				break
			}
			if err != nil {
				t.Fatalf("%d chunks: %v", chunks, err)
			}
			want = append(want, e)
		}
		if len(want) < chunks*3/4 {
			t.Errorf("%d chunks of %d sectors: only %d exceptions fit", chunks, chunk, len(want))
		}
		if _, err := s.Prepare(); !errors.Is(err, exstore.ErrNoSpace) {
			t.Errorf("%d chunks: Prepare on a full store again: got %v, want ErrNoSpace", chunks, err)
		}
		checkUsage(t, s, dev.Size(), len(want))
		s.Close()
		if !f.Persistent {
			continue
		}
		s, got := mustOpen(t, f, dev, chunk)
		if err := sameList(got, want); err != nil {
			t.Errorf("%d chunks: reopen of a full store: %v", chunks, err)
		}
		if err := checkData(dev, chunk, got); err != nil {
			t.Errorf("%d chunks: %v", chunks, err)
		}
		if _, err := s.Prepare(); !errors.Is(err, exstore.ErrNoSpace) {
			t.Errorf("%d chunks: Prepare on a reopened full store: got %v, want ErrNoSpace", chunks, err)
		}
		s.Close()
	}
}

// checkReopen commits in several sessions; each one must load exactly what
// the earlier ones committed, and never hand out a chunk in use.
func checkReopen(t testing.TB, f Factory) {
	if !f.Persistent {
		t.Skip("store is not persistent: nothing to reopen")
	}
	const chunk, chunks = 1, 400
	rng := f.rng(t)
	dev := NewCrashDev("reopen.cow", chunks*512)
	olds := distinctOlds(rng, 300)
	var want []exstore.Exception
	for session := 0; session < 6 && len(olds) > 0; session++ {
		s, got := mustOpen(t, f, dev, chunk)
		if err := sameList(got, want); err != nil {
			t.Fatalf("session %d: %v", session, err)
		}
		used := map[exstore.Chunk]bool{}
		for _, e := range got {
			used[e.New] = true
		}
		k := min(len(olds), 10+rng.IntN(60))
		for _, old := range olds[:k] {
			e, err := add(s, dev, old)
			if err != nil {
				t.Fatalf("session %d: %v", session, err)
			}
			if used[e.New] {
				t.Fatalf("session %d: Prepare returned COW chunk %d, which a loaded exception uses", session, e.New)
			}
			want = append(want, e)
		}
		olds = olds[k:]
		s.Close()
	}
	s, got := mustOpen(t, f, dev, chunk)
	defer s.Close()
	if err := sameList(got, want); err != nil {
		t.Fatalf("last session: %v", err)
	}
	if err := checkData(dev, chunk, got); err != nil {
		t.Error(err)
	}
}

// checkGarbage: a COW device is only zeroed at its start; everything after
// is old data that must never be read as exceptions.
func checkGarbage(t testing.TB, f Factory) {
	if !f.Persistent {
		t.Skip("store is not persistent: it reads no metadata")
	}
	const chunk, chunks = 1, 300
	rng := f.rng(t)
	dev := NewCrashDev("garbage.cow", chunks*512)
	dev.SetContents(garbage(rng, chunks*512, chunk))
	s, _ := mustOpen(t, f, dev, chunk)
	var want []exstore.Exception
	for _, old := range distinctOlds(rng, 150) {
		e, err := add(s, dev, old)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
	}
	s.Close()
	s, got := mustOpen(t, f, dev, chunk)
	defer s.Close()
	if err := sameList(got, want); err != nil {
		t.Fatalf("reopen: %v", err)
	}
}

// garbage is random bytes with the first chunk zeroed; its 8-byte words
// are small numbers, so that read as records they look plausible.
func garbage(rng *rand.Rand, size int, chunk exstore.Sector) []byte {
	b := make([]byte, size)
	for i := int(chunk.Bytes()); i+8 <= size; i += 8 {
		b[i] = byte(2 + rng.IntN(200))
		b[i+1] = byte(rng.IntN(2))
	}
	return b
}

// checkDrop: an invalidated store takes nothing more, and stays invalid.
func checkDrop(t testing.TB, f Factory) {
	const chunk, chunks = 8, 32
	dev := NewCrashDev("drop.cow", chunks*chunk*512)
	s, _ := mustOpen(t, f, dev, chunk)
	for i := range 3 {
		if _, err := add(s, dev, exstore.Chunk(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Drop(); err != nil {
		t.Fatalf("Drop: %v", err)
	}
	if _, err := s.Prepare(); !errors.Is(err, exstore.ErrInvalidated) {
		t.Errorf("Prepare after Drop: got %v, want ErrInvalidated", err)
	}
	wantErr(t, "Commit after Drop", s.Commit(exstore.Exception{Old: 9, New: 9}), exstore.ErrInvalidated)
	s.Close()
	if !f.Persistent {
		return
	}
	s, err := f.Open(dev, chunk)
	if err != nil {
		t.Fatalf("reopen an invalidated store: %v (it must open, and Load report ErrInvalidated)", err)
	}
	defer s.Close()
	wantErr(t, "Load of an invalidated store", s.Load(func(exstore.Exception) error { return nil }), exstore.ErrInvalidated)
	if _, err := s.Prepare(); !errors.Is(err, exstore.ErrInvalidated) {
		t.Errorf("Prepare on a reloaded invalidated store: got %v, want ErrInvalidated", err)
	}
}
