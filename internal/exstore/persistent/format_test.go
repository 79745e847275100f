package persistent

import (
	"bytes"
	"testing"

	"github.com/daxsnap/daxsnap/internal/exstore"
)

func TestHeader_EncodeDecode(t *testing.T) {
	buf := make([]byte, 16)
	h := Header{Magic: Magic, Valid: 1, Version: DiskVersion, ChunkSize: 16}
	h.encode(buf)
	want := []byte{'S', 'n', 'A', 'p', 1, 0, 0, 0, 1, 0, 0, 0, 16, 0, 0, 0}
	if !bytes.Equal(buf, want) {
		t.Errorf("encoded header = % x, want % x", buf, want)
	}
	if got := decodeHeader(buf); got != h {
		t.Errorf("decode(encode(%+v)) = %+v", h, got)
	}
}

func TestRecord_PutGet(t *testing.T) {
	area := make([]byte, 64)
	e := exstore.Exception{Old: 0x0102030405060708, New: 0x1112131415161718}
	putRecord(area, 2, e)
	if got := getRecord(area, 2); got != e {
		t.Errorf("getRecord = %v, want %v", got, e)
	}
	want := []byte{8, 7, 6, 5, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11}
	if !bytes.Equal(area[32:48], want) {
		t.Errorf("record bytes = % x, want little-endian old then new % x", area[32:48], want)
	}
}

func TestGeometry(t *testing.T) {
	g := newGeometry(1) // 512-byte chunks: 32 records per area, stride 33
	if g.epa != 32 {
		t.Fatalf("epa = %d, want 32", g.epa)
	}
	for a, want := range []exstore.Chunk{1, 34, 67, 100} {
		if got := g.areaLocation(uint64(a)); got != want {
			t.Errorf("areaLocation(%d) = %d, want %d", a, got, want)
		}
		if got, ok := g.areaAt(want); !ok || got != uint64(a) {
			t.Errorf("areaAt(%d) = %d, %v; want area %d", want, got, ok, a)
		}
	}
	for _, c := range []exstore.Chunk{0, 2, 33, 35, 66, 68} {
		if a, ok := g.areaAt(c); ok {
			t.Errorf("areaAt(%d) = area %d, want a data chunk (or the header)", c, a)
		}
	}
	for c, want := range map[exstore.Chunk]exstore.Chunk{1: 2, 2: 2, 33: 33, 34: 35, 67: 68, 68: 68} {
		if got := g.skipMetadata(c); got != want {
			t.Errorf("skipMetadata(%d) = %d, want %d", c, got, want)
		}
	}
	if g := newGeometry(8); g.epa != 256 || g.areaLocation(1) != 258 {
		t.Errorf("4 KiB chunks: epa %d, area 1 at %d; want 256 and 258 (the kernel's one metadata chunk per 256 data chunks)", g.epa, g.areaLocation(1))
	}
}
