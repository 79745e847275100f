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

// fileWriterCOW is a tmpfs COW device that can be written through its
// file (backing.FileWriter), counting those writes.
type fileWriterCOW struct {
	*countingCOW
	fileWrites int
}

func (c *fileWriterCOW) WriteFileAt(p []byte, off int64) (int, error) {
	c.fileWrites++
	return c.Mem.WriteAt(p, off)
}

// TestCopyChunk_direct: a first write's copy goes through a buffer and
// the file into a tmpfs COW that can be written so (one write(2), no
// store into its fresh memory), straight from the origin into the memory
// of another DAX-capable COW (one copy, no block write to the COW), and
// through a buffer and WriteAt into any other COW (a regular file, or a
// read-only view); all land the origin chunk's bytes.
func TestCopyChunk_direct(t *testing.T) {
	for _, tc := range []struct {
		name               string
		caps               backing.Capability
		fileWriter         bool
		writes, fileWrites int
	}{
		{"tmpfs file", backing.DAX, true, 0, 1},
		{"tmpfs", backing.DAX, false, 0, 0},
		{"file", 0, false, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const chunk = 4096
			orig := backingtest.NewMem("orig", 4*chunk, 0)
			for i := range orig.Bytes() {
				orig.Bytes()[i] = byte(i*7 + i/chunk)
			}
			counting := &countingCOW{Mem: backingtest.NewMem("cow", 8*chunk, tc.caps)}
			var cow backing.Device = counting
			fw := &fileWriterCOW{countingCOW: counting}
			if tc.fileWriter {
				cow = fw
			}
			s := &cowState{origin: orig, cow: cow, chunkBytes: chunk, cowMem: directCOW(cow), cowFile: fileCOW(cow)}
			s.bufs.New = func() any { b := make([]byte, chunk); return &b }
			if err := s.copyChunk(exstore.Chunk(2), exstore.Chunk(5)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(counting.Bytes()[5*chunk:6*chunk], orig.Bytes()[2*chunk:3*chunk]) {
				t.Error("COW chunk 5 does not hold origin chunk 2")
			}
			if counting.writes != tc.writes || fw.fileWrites != tc.fileWrites {
				t.Errorf("%d block writes and %d file writes to the COW, want %d and %d", counting.writes, fw.fileWrites, tc.writes, tc.fileWrites)
			}
		})
	}
}
