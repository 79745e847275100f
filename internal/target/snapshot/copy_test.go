package snapshot

import (
	"bytes"
	"runtime"
	"slices"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// countingDev is a device that counts its block reads and writes.
type countingDev struct {
	*backingtest.Mem
	reads, writes int
}

func (c *countingDev) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	return c.Mem.ReadAt(p, off)
}

func (c *countingDev) WriteAt(p []byte, off int64) (int, error) {
	c.writes++
	return c.Mem.WriteAt(p, off)
}

// fileWriterCOW is a tmpfs COW device that can be written through its
// file (backing.FileWriter), counting those writes.
type fileWriterCOW struct {
	*countingDev
	fileWrites int
}

func (c *fileWriterCOW) WriteFileAt(p []byte, off int64) (int, error) {
	c.fileWrites++
	return c.Mem.WriteAt(p, off)
}

// FileWrites: a tmpfs file in small pages (backing.FileWrites).
func (c *fileWriterCOW) FileWrites() bool { return true }

// cowKind is one way copies reach a COW, with the COW writes a test
// expects of that way per run copied.
type cowKind struct {
	name       string
	caps       backing.Capability
	fileWriter bool // a tmpfs file: written with write(2)
	// writes and fileWrites per run: block writes, and writes through
	// the file (none when copies go straight into the COW's memory).
	writes, fileWrites int
}

// cowKinds: through a buffer and the file into a tmpfs COW that can be
// written so (one write(2), no store into its fresh memory), straight
// from the origin into the memory of another DAX-capable COW (one copy,
// no write to the COW), and through a buffer and WriteAt into any other
// COW (a regular file, or a read-only view).
var cowKinds = []cowKind{
	{"tmpfs file", backing.DAX, true, 0, 1},
	{"memory", backing.DAX, false, 0, 0},
	{"file", 0, false, 1, 0},
}

// copyRig is a cowState over an origin of originSize bytes whose bytes
// tell their place, and a COW of cowSize bytes of kind k, for tests of
// the copy-out; the origin and the COW count their I/O.
type copyRig struct {
	s    *cowState
	orig *countingDev
	cow  *countingDev   // the COW's memory and block I/O
	fw   *fileWriterCOW // its writes through the file (kind tmpfs file)
}

func newCopyRig(k cowKind, chunk, originSize, cowSize int64) copyRig {
	r := copyRig{orig: &countingDev{Mem: backingtest.NewMem("orig", originSize, 0)}}
	for i := range r.orig.Bytes() {
		r.orig.Bytes()[i] = byte(i*7 + i/int(chunk))
	}
	r.cow = &countingDev{Mem: backingtest.NewMem("cow", cowSize, k.caps)}
	r.fw = &fileWriterCOW{countingDev: r.cow}
	var cow backing.Device = r.cow
	if k.fileWriter {
		cow = r.fw
	}
	r.s = &cowState{origin: r.orig, cow: cow, chunkBytes: chunk, cowMem: directCOW(cow), cowFile: fileCOW(cow)}
	r.s.initBufs()
	return r
}

// wantWrites fails t unless the COW took runs runs' worth of kind k's
// writes.
func (r copyRig) wantWrites(t *testing.T, k cowKind, runs int) {
	t.Helper()
	if r.cow.writes != k.writes*runs || r.fw.fileWrites != k.fileWrites*runs {
		t.Errorf("%d block writes and %d file writes to the COW, want %d and %d", r.cow.writes, r.fw.fileWrites, k.writes*runs, k.fileWrites*runs)
	}
}

// TestCopyRun_direct: a first write's copy of one chunk takes each way
// into the COW (cowKinds), and all land the origin chunk's bytes.
func TestCopyRun_direct(t *testing.T) {
	for _, k := range cowKinds {
		t.Run(k.name, func(t *testing.T) {
			const chunk = 4096
			r := newCopyRig(k, chunk, 4*chunk, 8*chunk)
			if err := r.s.copyRun([]exstore.Exception{{Old: 2, New: 5}}, nil); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.cow.Bytes()[5*chunk:6*chunk], r.orig.Bytes()[2*chunk:3*chunk]) {
				t.Error("COW chunk 5 does not hold origin chunk 2")
			}
			r.wantWrites(t, k, 1)
		})
	}
}

// TestCopyRuns_oneWritePerRun: chunks reserved in a row (one write's, or
// one NBD burst's) are copied into the COW with one write per run of
// consecutive COW chunks, at most copyRunMax bytes, and the origin is
// read once per stretch of consecutive origin chunks in a run; every COW
// chunk holds its origin chunk (a partial last chunk included), and each
// stretch is reported as one range of the origin. Copied chunk by chunk,
// a 1 MiB write over 4 KiB chunks made 256 writes and 256 reads. The same
// for each way into the COW: its file (tmpfs), straight into its memory
// (other DAX-capable COWs: no write at all), block writes (the rest).
func TestCopyRuns_oneWritePerRun(t *testing.T) {
	for _, k := range cowKinds {
		t.Run(k.name, func(t *testing.T) {
			const chunk = 4096
			const nChunks = 600
			const originSize = nChunks*chunk - 512 // the last chunk is partial
			r := newCopyRig(k, chunk, originSize, 2*nChunks*chunk)
			s, orig := r.s, r.orig

			var pend []exstore.Exception
			add := func(old, new exstore.Chunk, n int) {
				for i := range n {
					pend = append(pend, exstore.Exception{Old: old + exstore.Chunk(i), New: new + exstore.Chunk(i)})
				}
			}
			perRun := copyRunMax / chunk
			add(0, 3, 3)           // COW 3-5, origin 0-2
			add(5, 6, 1)           // COW 6 follows: the same run, another stretch
			add(6, 8, 2)           // COW gap: a new run
			add(10, 20, 300)       // longer than copyRunMax: split
			add(50, 320, 1)        // the second part's run goes on with a scattered chunk
			add(nChunks-2, 400, 2) // a run ending with the partial chunk
			var got []dm.Range
			if err := s.copyRuns(pend, func(off, n int64) { got = append(got, dm.Range{Off: off, Len: n}) }); err != nil {
				t.Fatal(err)
			}
			for _, e := range pend {
				off, n := s.originSpan(e.Old)
				if !bytes.Equal(r.cow.Bytes()[int64(e.New)*chunk:int64(e.New)*chunk+n], orig.Bytes()[off:off+n]) {
					t.Fatalf("COW chunk %d does not hold origin chunk %d", e.New, e.Old)
				}
			}
			want := []dm.Range{
				{Off: 0, Len: 3 * chunk}, {Off: 5 * chunk, Len: chunk},
				{Off: 6 * chunk, Len: 2 * chunk},
				{Off: 10 * chunk, Len: int64(perRun) * chunk},
				{Off: int64(10+perRun) * chunk, Len: int64(300-perRun) * chunk}, {Off: 50 * chunk, Len: chunk},
				{Off: (nChunks - 2) * chunk, Len: originSize - (nChunks-2)*chunk},
			}
			if !slices.Equal(got, want) {
				t.Errorf("origin stretches read %v, want %v", got, want)
			}
			if orig.reads != len(want) {
				t.Errorf("%d reads of the origin, want %d", orig.reads, len(want))
			}
			r.wantWrites(t, k, 5)
		})
	}
}

// TestCopyRun_oneChunkTakesAChunkBuffer: a one-chunk copy (a 4 KiB first
// write, a fault) refills an emptied pool with a chunk-sized buffer, not a
// run-sized one: a garbage collection empties the pools, and a 1 MiB
// buffer allocated (and cleared) per 4 KiB copy after each was measurable.
func TestCopyRun_oneChunkTakesAChunkBuffer(t *testing.T) {
	const chunk = 4096
	s := newCopyRig(cowKinds[0], chunk, 4*chunk, 8*chunk).s
	run := []exstore.Exception{{Old: 1, New: 2}}
	var most uint64
	for range 5 {
		runtime.GC()
		runtime.GC() // a pool's buffers outlive one collection
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := s.copyRun(run, nil); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		most = max(most, after.TotalAlloc-before.TotalAlloc)
	}
	if most >= 4*chunk {
		t.Errorf("a one-chunk copy with empty pools allocated %d bytes, want less than %d (a chunk's buffer)", most, 4*chunk)
	}
}
