package snapshot

import (
	"bytes"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// countingCOW is a COW device that counts its block writes.
type countingCOW struct {
	*backingtest.Mem
	writes int
}

func (c *countingCOW) WriteAt(p []byte, off int64) (int, error) {
	c.writes++
	return c.Mem.WriteAt(p, off)
}

// TestCopyChunk_direct: a first write's copy goes straight from the
// origin into the memory of a tmpfs COW (one copy, no block write to the
// COW), and through a buffer and WriteAt into any other COW (a regular
// file, or a read-only view); both land the origin chunk's bytes.
func TestCopyChunk_direct(t *testing.T) {
	for _, tc := range []struct {
		name   string
		caps   backing.Capability
		writes int
	}{
		{"tmpfs", backing.DAX, 0},
		{"file", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const chunk = 4096
			orig := backingtest.NewMem("orig", 4*chunk, 0)
			for i := range orig.Bytes() {
				orig.Bytes()[i] = byte(i*7 + i/chunk)
			}
			cow := &countingCOW{Mem: backingtest.NewMem("cow", 8*chunk, tc.caps)}
			s := &cowState{origin: orig, cow: cow, chunkBytes: chunk, cowMem: directCOW(cow)}
			s.bufs.New = func() any { b := make([]byte, chunk); return &b }
			if err := s.copyChunk(exstore.Chunk(2), exstore.Chunk(5)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(cow.Bytes()[5*chunk:6*chunk], orig.Bytes()[2*chunk:3*chunk]) {
				t.Error("COW chunk 5 does not hold origin chunk 2")
			}
			if cow.writes != tc.writes {
				t.Errorf("%d block writes to the COW, want %d", cow.writes, tc.writes)
			}
		})
	}
}
