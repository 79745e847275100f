package transient

import (
	"errors"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
)

func TestStore_Conformance(t *testing.T) {
	storetest.Run(t, storetest.Factory{
		Open: func(dev backing.Device, chunk exstore.Sector) (exstore.Store, error) {
			return New(dev, Options{ChunkSize: chunk})
		},
	})
}

func TestNew_ChunkSize(t *testing.T) {
	dev := backingtest.NewMem("n.cow", 1<<20, 0)
	if _, err := New(dev, Options{}); !errors.Is(err, exstore.ErrInvalidChunkSize) || !strings.Contains(err.Error(), "chunk size not set") {
		t.Errorf("chunk size 0: %v, want ErrInvalidChunkSize saying it is not set", err)
	}
	if _, err := New(dev, Options{ChunkSize: 12}); !errors.Is(err, exstore.ErrInvalidChunkSize) {
		t.Errorf("chunk size 12: %v, want ErrInvalidChunkSize", err)
	}
	if _, err := New(dev, Options{ChunkSize: 4, OriginLogicalBlockSize: 4096}); !errors.Is(err, exstore.ErrInvalidChunkSize) {
		t.Errorf("chunk size 4 with 4 KiB origin blocks: %v, want ErrInvalidChunkSize", err)
	}
}

// TestStore_LinearFromZero: like the kernel's, chunks come from the start
// of the COW device, usage counts them, and there is no metadata.
func TestStore_LinearFromZero(t *testing.T) {
	dev := backingtest.NewMem("n.cow", 4*8*512+100, 0) // 4 whole chunks and a tail
	s, err := New(dev, Options{ChunkSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(func(exstore.Exception) error { t.Error("transient Load reported an exception"); return nil }); err != nil {
		t.Fatal(err)
	}
	for want := range exstore.Chunk(4) {
		c, err := s.Prepare()
		if err != nil || c != want {
			t.Fatalf("Prepare = %d, %v; want %d", c, err, want)
		}
	}
	if _, err := s.Prepare(); !errors.Is(err, exstore.ErrNoSpace) {
		t.Errorf("fifth Prepare: %v, want ErrNoSpace", err)
	}
	if alloc, total, meta := s.Usage(); alloc != 32 || total != 32 || meta != 0 {
		t.Errorf("Usage = %d/%d %d, want 32/32 0", alloc, total, meta)
	}
	if err := s.Commit(exstore.Exception{Old: 1, New: 2}); err != nil {
		t.Errorf("Commit of a prepared chunk: %v", err)
	}
	if got := s.Status(exstore.StatusTable); got != "N 8" {
		t.Errorf("Status(table) = %q, want \"N 8\"", got)
	}
	_, _, err = s.PrepareMerge()
	if !errors.Is(err, exstore.ErrMergeUnsupported) || !strings.Contains(err.Error(), "transient snapshots (store type N) cannot merge") {
		t.Errorf("PrepareMerge: %v", err)
	}
}
