package snapshot_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
)

// TestOrigin_prepareWritesCommitsOnce: Device.PrepareWrites copies the
// chunks of a burst of origin writes into the snapshot and commits them
// in one metadata write (two flushes of the COW, as for one exception),
// a chunk two ranges share once; the writes that follow find their
// exceptions and commit nothing; the snapshot keeps the old data. Ranges
// outside the device are skipped.
func TestOrigin_prepareWritesCommitsOnce(t *testing.T) {
	w, old, s0 := numberedWorld(t)
	chunks := func() dm.Sector {
		u, ok := snapshot.UsageOf(s0)
		if !ok {
			t.Fatal("no usage")
		}
		return (u.Allocated - u.Metadata) / 8
	}
	rs := []dm.Range{
		{Off: 0, Len: 4096},
		{Off: 5 * 4096, Len: 100},
		{Off: 5*4096 + 200, Len: 100}, // chunk 5 again
		{Off: 9*4096 - 10, Len: 20},   // chunks 8 and 9
		{Off: originBytes, Len: 4096}, // past the end: skipped
		{Off: 30 * 4096, Len: 4096},
	}
	flushes := w.cows[0].Flushes.Load()
	if err := w.vol.PrepareWrites(rs); err != nil {
		t.Fatal(err)
	}
	if got := w.cows[0].Flushes.Load() - flushes; got != 2 {
		t.Errorf("PrepareWrites flushed the COW %d times, want 2 (one commit for all chunks)", got)
	}
	if got := chunks(); got != 5 {
		t.Errorf("%d chunks in the COW after PrepareWrites, want 5 (0, 5, 8, 9, 30)", got)
	}
	flushes = w.cows[0].Flushes.Load()
	for i, r := range rs[:4] {
		if _, err := w.vol.WriteAt(bytes.Repeat([]byte{0xee - byte(i)}, int(r.Len)), r.Off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.vol.WriteAt(make([]byte, 4096), 30*4096); err != nil {
		t.Fatal(err)
	}
	if got := w.cows[0].Flushes.Load() - flushes; got != 0 {
		t.Errorf("the prepared writes flushed the COW %d times, want 0 (their exceptions were committed)", got)
	}
	if got := chunks(); got != 5 {
		t.Errorf("%d chunks in the COW after the writes, want still 5", got)
	}
	if got := read(t, s0, 0, originBytes); !bytes.Equal(got, old) {
		t.Error("the snapshot lost the origin's old data")
	}
}

// TestSnapshot_writeCommitsOnce: a write to the snapshot device itself
// that reaches chunks without an exception commits them all in one
// metadata write (two flushes of the COW), the chunks it covers whole
// filled from the write and the two it covers in part copied from the
// origin first; the snapshot then reads the origin's old data with the
// write over it, and the origin is untouched. Remapped one chunk at a
// time, the write committed six times (twelve flushes).
func TestSnapshot_writeCommitsOnce(t *testing.T) {
	w, old, s0 := numberedWorld(t)
	const off, n = 2*4096 + 1000, 5 * 4096 // chunks 2 (in part) to 7 (in part)
	data := bytes.Repeat([]byte{0xab}, n)
	flushes := w.cows[0].Flushes.Load()
	if _, err := s0.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if got := w.cows[0].Flushes.Load() - flushes; got != 2 {
		t.Errorf("a write over six chunks flushed the COW %d times, want 2 (one commit for all)", got)
	}
	want := bytes.Clone(old)
	copy(want[off:], data)
	got := make([]byte, len(want))
	if _, err := s0.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the snapshot does not read the origin's data with the write over it")
	}
	if !bytes.Equal(w.orig.Bytes(), old) {
		t.Error("a write to the snapshot changed the origin")
	}
}

// numberedWorld is a world whose origin's bytes hold their 4 KiB chunk's
// index, with a persistent snapshot s0 of it: the world, the origin's
// bytes at the snapshot, and s0.
func numberedWorld(t *testing.T) (*world, []byte, *dm.Device) {
	w := newWorld(t, 0)
	for i := range w.orig.Bytes() {
		w.orig.Bytes()[i] = byte(i / 4096)
	}
	return w, bytes.Clone(w.orig.Bytes()), w.takeSnapshot(0, "P")
}

// TestSnapshot_writeAcrossAMetadataArea: a write to the snapshot device
// whose new chunks straddle a metadata area of the persistent COW (256
// exceptions of 4 KiB chunks per area, the data chunks after each) fills
// them in two runs, around the area: the snapshot reads the write back,
// and again once reloaded from the COW, whose metadata the write must not
// have overwritten. Written as one run, the reload finds a corrupt table.
func TestSnapshot_writeAcrossAMetadataArea(t *testing.T) {
	const chunk = 4096
	const originSize = 512 * chunk
	orig := backingtest.NewMem("orig", originSize, 0)
	cow := backingtest.NewMem("cow", 2*originSize, 0)
	reg := dm.NewRegistry()
	all.Register(reg)
	m := dm.NewManager(reg, dm.NewDevicePool(backingtest.Opener(orig, cow)))
	table := fmt.Sprintf("0 %d snapshot orig cow P 8", originSize/512)
	if _, err := m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot-origin orig", originSize/512)}); err != nil {
		t.Fatal(err)
	}
	s, err := m.Create("s", dm.CreateOptions{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(orig.Bytes())
	write := func(off int64, n int, b byte) {
		t.Helper()
		p := bytes.Repeat([]byte{b}, n)
		if _, err := s.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	write(0, 200*chunk, 1)         // the first area's first 200 data chunks
	write(300*chunk, 100*chunk, 2) // its last 56, then 44 after the second area
	if got := read(t, s, 0, originSize); !bytes.Equal(got, want) {
		t.Fatal("the snapshot does not read back what was written to it")
	}
	if err := m.Remove("s", dm.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if s, err = m.Create("s", dm.CreateOptions{Table: table}); err != nil {
		t.Fatalf("reload the snapshot from its COW: %v", err)
	}
	if got := read(t, s, 0, originSize); !bytes.Equal(got, want) {
		t.Fatal("reloaded from its COW, the snapshot does not read back what was written to it")
	}
}
