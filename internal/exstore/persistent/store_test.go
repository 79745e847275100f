package persistent

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
)

func factory() storetest.Factory {
	return storetest.Factory{
		Open: func(dev backing.Device, chunk exstore.Sector) (exstore.Store, error) {
			return Open(dev, Options{ChunkSize: chunk})
		},
		Persistent:     true,
		Merge:          true,
		RecordsPerArea: func(chunk exstore.Sector) int { return int(chunk.Bytes() / recordSize) },
	}
}

func TestStore_Conformance(t *testing.T) {
	storetest.Run(t, factory())
}

// TestStore_CommitBatch: one call, one metadata batch: a flush before and
// one after each area write, two areas here since the 40 records cross an
// area boundary; every record loads back after a reopen.
func TestStore_CommitBatch(t *testing.T) {
	dev := storetest.NewCrashDev("cow", 64*4096)
	s, err := Open(dev, Options{ChunkSize: 1}) // 32 records per area
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(func(exstore.Exception) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var es []exstore.Exception
	for i := range 40 {
		c, err := s.Prepare()
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, exstore.Exception{Old: exstore.Chunk(100 + i), New: c})
	}
	before := dev.Flushes()
	if err := s.CommitBatch(es); err != nil {
		t.Fatal(err)
	}
	if got := dev.Flushes() - before; got != 4 {
		t.Fatalf("CommitBatch of 40 records over 2 areas took %d flushes, want 4", got)
	}
	s.Close()
	re, err := Open(dev.CrashClone(nil), Options{ChunkSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []exstore.Exception
	if err := re.Load(func(e exstore.Exception) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(es) {
		t.Fatalf("reloaded %d exceptions, committed %d", len(got), len(es))
	}
	for i := range es {
		if got[i] != es[i] {
			t.Fatalf("exception %d: %v, want %v", i, got[i], es[i])
		}
	}
}

// TestStore_CommitBatchAllocs: a commit that no other commit waits on is
// written at once, with no batch to queue in (two channels and the batch
// itself made 4 allocations a first write on the NBD and fault paths).
func TestStore_CommitBatchAllocs(t *testing.T) {
	dev := newShmDev(t, 16<<20)
	s, err := Open(dev, Options{ChunkSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Load(func(exstore.Exception) error { return nil }); err != nil {
		t.Fatal(err)
	}
	es := make([]exstore.Exception, 1)
	allocs := testing.AllocsPerRun(100, func() {
		c, err := s.Prepare()
		if err != nil {
			t.Fatal(err)
		}
		es[0] = exstore.Exception{Old: c, New: c}
		if err := s.CommitBatch(es); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("an uncontended Prepare + CommitBatch made %v allocations, want 0", allocs)
	}
}
