package persistent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

var update = flag.Bool("update", false, "rewrite testdata/*.cow from the hand-built images")

// image builds a COW device by hand from the format description, with its
// own byte arithmetic (not the store's helpers), so the vectors check the
// store against the format rather than against itself.
type image struct {
	chunk   int // sectors
	chunks  int // device size in chunks
	magic   uint32
	valid   uint32
	version uint32
	hdrSize uint32 // the header's chunk_size field; 0 means chunk
	areas   [][]exstore.Exception
}

func (im image) bytes() []byte {
	cb := im.chunk * 512
	b := make([]byte, im.chunks*cb)
	hdrSize := im.hdrSize
	if hdrSize == 0 {
		hdrSize = uint32(im.chunk)
	}
	binary.LittleEndian.PutUint32(b[0:], im.magic)
	binary.LittleEndian.PutUint32(b[4:], im.valid)
	binary.LittleEndian.PutUint32(b[8:], im.version)
	binary.LittleEndian.PutUint32(b[12:], hdrSize)
	epa := cb / 16
	for a, recs := range im.areas {
		at := (1 + a*(epa+1)) * cb
		for i, e := range recs {
			binary.LittleEndian.PutUint64(b[at+16*i:], uint64(e.Old))
			binary.LittleEndian.PutUint64(b[at+16*i+8:], uint64(e.New))
		}
	}
	return b
}

// valid returns a well-formed image header: magic, valid=1, version 1.
func validImage(chunk, chunks int, areas ...[]exstore.Exception) image {
	return image{chunk: chunk, chunks: chunks, magic: 0x70416e53, valid: 1, version: 1, areas: areas}
}

// run returns n exceptions: origin chunks from old, COW chunks from new.
func run(old, new exstore.Chunk, n int) []exstore.Exception {
	out := make([]exstore.Exception, n)
	for i := range out {
		out[i] = exstore.Exception{Old: old + exstore.Chunk(i), New: new + exstore.Chunk(i)}
	}
	return out
}

type vector struct {
	name     string // file under testdata, or "" for images built at test time
	img      image
	want     []exstore.Exception
	nextFree exstore.Chunk // after Load
	err      error         // errors.Is target
	errText  string        // must appear in the error
}

func vectors() []vector {
	partial := []exstore.Exception{{Old: 100, New: 2}, {Old: 101, New: 3}, {Old: 102, New: 4}, {Old: 7, New: 5}, {Old: 50, New: 6}}
	// Area 1 of the two-area image completed out of order after a crash:
	// chunk 38 was handed out but never committed (a hole).
	area1 := []exstore.Exception{{Old: 900, New: 35}, {Old: 901, New: 37}, {Old: 902, New: 36}, {Old: 3, New: 39}}
	full := run(500, 2, 32)
	return []vector{
		{name: "empty-4k.cow", img: validImage(8, 4, nil), nextFree: 2},
		{name: "partial-4k.cow", img: validImage(8, 8, partial), want: partial, nextFree: 7},
		{name: "fullarea-512.cow", img: validImage(1, 35, full, nil), want: full, nextFree: 35},
		{name: "twoareas-512.cow", img: validImage(1, 50, full, area1), want: append(slices.Clone(full), area1...), nextFree: 40},
		{name: "invalid-4k.cow", img: func() image { im := validImage(8, 8, partial[:2]); im.valid = 0; return im }(),
			err: exstore.ErrInvalidated, errText: "valid field is 0"},
		{name: "", img: validImage(128, 3, run(4, 2, 1)), want: run(4, 2, 1), nextFree: 3}, // 64 KiB chunks: 192 KiB, built at test time
		{name: "badmagic.cow", img: image{chunk: 1, chunks: 4, magic: 0x12345678, valid: 1, version: 1},
			err: exstore.ErrCorrupt, errText: "magic 0x12345678 is not 0x70416e53"},
		{name: "version2.cow", img: image{chunk: 1, chunks: 4, magic: 0x70416e53, valid: 1, version: 2},
			err: exstore.ErrUnsupportedVersion, errText: "version 2"},
		{name: "chunk3.cow", img: image{chunk: 1, chunks: 4, magic: 0x70416e53, valid: 1, version: 1, hdrSize: 3},
			err: exstore.ErrCorrupt, errText: "byte 12: chunk_size: invalid chunk size: 3 sectors is not a power of two"},
		{name: "outside.cow", img: validImage(1, 8, []exstore.Exception{{Old: 1, New: 2}, {Old: 2, New: 100}}),
			err: exstore.ErrCorrupt, errText: "record 1 at byte 536: new_chunk 100 is beyond the end of the COW device (8 chunks"},
		{name: "ontoarea.cow", img: validImage(1, 40, []exstore.Exception{{Old: 1, New: 34}}),
			err: exstore.ErrCorrupt, errText: "new_chunk 34 is metadata area 1"},
		{name: "duplicate.cow", img: validImage(1, 8, []exstore.Exception{{Old: 1, New: 3}, {Old: 2, New: 3}}),
			err: exstore.ErrCorrupt, errText: "new_chunk 3 is already used by an earlier exception"},
		{name: "truncated.cow", img: validImage(1, 34, full),
			err: exstore.ErrCorrupt, errText: "list continues in area 1 at chunk 34, but the COW device ends at chunk 34"},
	}
}

// TestVectors loads hand-built COW images, checked in under testdata (run
// with -update to rewrite them), and compares with what the format says
// they hold.
func TestVectors(t *testing.T) {
	total := 0
	for _, v := range vectors() {
		name := v.name
		if name == "" {
			name = "built-at-test-time"
		}
		t.Run(name, func(t *testing.T) {
			img := v.img.bytes()
			if v.name != "" {
				path := filepath.Join("testdata", v.name)
				if *update {
					if err := os.WriteFile(path, img, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				disk, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test -run TestVectors -update to create it)", err)
				}
				if !bytes.Equal(disk, img) {
					t.Fatalf("%s differs from the image the test builds (run with -update if the builder changed on purpose)", path)
				}
				total += len(disk)
			}
			checkVector(t, v, img)
		})
	}
	if total > 300<<10 {
		t.Errorf("checked-in vectors take %d bytes; keep them under 300 KiB", total)
	}
}

func checkVector(t *testing.T, v vector, img []byte) {
	dev := memImage(v.name, img)
	s, err := Open(dev, Options{})
	var got []exstore.Exception
	if err == nil {
		err = s.Load(func(e exstore.Exception) error { got = append(got, e); return nil })
	}
	if v.err != nil {
		if !errors.Is(err, v.err) || !strings.Contains(fmtErr(err), v.errText) {
			t.Fatalf("got error %v\nwant one matching %q and containing %q", err, v.err, v.errText)
		}
	} else {
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, v.want) {
			t.Fatalf("loaded %v\nwant %v", got, v.want)
		}
		if alloc, _, _ := s.Usage(); alloc != exstore.Sector(v.nextFree)*s.ChunkSize() {
			t.Errorf("allocated %d sectors, want next free chunk %d * %d", alloc, v.nextFree, s.ChunkSize())
		}
	}
	rep, ierr := Inspect(dev)
	if (ierr == nil) != (v.err == nil || errors.Is(v.err, exstore.ErrInvalidated)) {
		t.Errorf("Inspect error %v, Load error %v: they must agree (an invalidated store inspects fine)", ierr, err)
	}
	if v.err == nil && !slices.Equal(rep.Exceptions, v.want) {
		t.Errorf("Inspect found %v, want %v", rep.Exceptions, v.want)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func memImage(name string, img []byte) *backingtest.Mem {
	m := backingtest.NewMem(name, int64(len(img)), 0)
	copy(m.Bytes(), img)
	return m
}

// TestStore_WritesKernelLayout: a store driven through the API leaves
// exactly the bytes the format prescribes, down to the zeroed next area.
func TestStore_WritesKernelLayout(t *testing.T) {
	dev := backingtest.NewMem("layout.cow", 50*512, 0)
	// Old contents where area 1 will go: the store must zero it.
	copy(dev.Bytes()[34*512:], bytes.Repeat([]byte{0xee}, 512))
	s, err := Open(dev, Options{ChunkSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(func(exstore.Exception) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var area0, area1 []exstore.Exception
	for i := range 35 {
		c, err := s.Prepare()
		if err != nil {
			t.Fatal(err)
		}
		e := exstore.Exception{Old: exstore.Chunk(1000 - i), New: c}
		if err := s.Commit(e); err != nil {
			t.Fatal(err)
		}
		if i < 32 {
			area0 = append(area0, e)
		} else {
			area1 = append(area1, e)
		}
	}
	if area1[0].New != 35 {
		t.Errorf("33rd exception got COW chunk %d, want 35 (chunk 34 is area 1)", area1[0].New)
	}
	want := validImage(1, 50, area0, area1).bytes()
	if got := dev.Bytes(); !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		t.Fatalf("device differs from the hand-built image first at byte %d (chunk %d): got %#x, want %#x", i, i/512, got[i], want[i])
	}
	if alloc, total, meta := s.Usage(); alloc != 38 || total != 50 || meta != 3 {
		t.Errorf("Usage = %d/%d %d, want 38/50 3 (next free 38; header and areas 0-1)", alloc, total, meta)
	}
	if err := s.Drop(); err != nil {
		t.Fatal(err)
	}
	inv := validImage(1, 50, area0, area1)
	inv.valid = 0
	if !bytes.Equal(dev.Bytes()[:512], inv.bytes()[:512]) {
		t.Errorf("header after Drop = % x, want valid=0", dev.Bytes()[:16])
	}
}
