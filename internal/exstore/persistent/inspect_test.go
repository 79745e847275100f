package persistent

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

func TestInspect_TwoAreas(t *testing.T) {
	full := run(500, 2, 32)
	tail := []exstore.Exception{{Old: 7, New: 35}, {Old: 7, New: 36}}
	img := validImage(1, 50, full, tail).bytes()
	img[300] = 0xff     // header chunk, after the fields
	img[34*512+100] = 9 // area 1, after its end marker (record 2)
	r, err := Inspect(memImage("two.cow", img))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Exceptions, append(slices.Clone(full), tail...)) {
		t.Errorf("exceptions %v", r.Exceptions)
	}
	wantAreas := []AreaReport{{Index: 0, Chunk: 1, Records: 32, Full: true}, {Index: 1, Chunk: 34, Records: 2, DirtyTail: true}}
	if !slices.Equal(r.Areas, wantAreas) {
		t.Errorf("areas %+v, want %+v", r.Areas, wantAreas)
	}
	if r.NextFree != 37 || r.Allocated != 37 || r.Total != 50 || r.Metadata != 3 {
		t.Errorf("usage: next free %d, %d/%d %d; want 37, 37/50 3", r.NextFree, r.Allocated, r.Total, r.Metadata)
	}
	if !r.HeaderTailDirty || len(r.Notes) != 3 {
		t.Errorf("notes %q: want the dirty header tail, the duplicate origin chunk 7, the dirty area tail", r.Notes)
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"COW device:   two.cow (25600 bytes, logical block 512 bytes)",
		"header:       magic 0x70416e53, valid 1 (valid), version 1, chunk_size 1 sectors",
		"layout:       512 bytes per chunk, 32 exceptions per area, 50 chunks on the device",
		"area 0:       chunk 1, 32 records (full)",
		"area 1:       chunk 34, 2 records (current)",
		"exceptions:   34",
		"  33: origin chunk 7 -> COW chunk 36",
		"usage:        37/50 sectors allocated, 3 metadata sectors, next free chunk 37",
		"note:         origin chunk 7 has two exceptions (COW chunks 35 and 36",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestInspect_Errors(t *testing.T) {
	r, err := Inspect(memImage("bad.cow", validImage(1, 8, []exstore.Exception{{Old: 1, New: 2}, {Old: 2, New: 100}}).bytes()))
	if !errors.Is(err, exstore.ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
	if len(r.Exceptions) != 1 {
		t.Errorf("partial report has %d exceptions, want the 1 before the damage", len(r.Exceptions))
	}
	var b strings.Builder
	r.WriteText(&b)
	if !strings.Contains(b.String(), "ERROR:        inspect bad.cow: metadata area 0 (chunk 1) record 1") {
		t.Errorf("text does not end with the error:\n%s", b.String())
	}

	r, err = Inspect(backingtest.NewMem("zero.cow", 4096, 0))
	if err != nil || !r.Fresh {
		t.Errorf("zeroed device: fresh=%v, %v", r.Fresh, err)
	}
	b.Reset()
	r.WriteText(&b)
	if !strings.Contains(b.String(), "magic 0: no exception store yet") {
		t.Errorf("fresh text:\n%s", b.String())
	}

	// An invalidated store's damaged exceptions are a note, not an error.
	im := validImage(1, 8, []exstore.Exception{{Old: 1, New: 2}, {Old: 2, New: 100}})
	im.valid = 0
	r, err = Inspect(memImage("inv.cow", im.bytes()))
	if err != nil || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "invalidated") {
		t.Errorf("invalidated damaged store: %v, notes %q", err, r.Notes)
	}
}
