package persistent

import (
	"bytes"
	"testing"

	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
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

// DecodeHeader reads what encode wrote, and refuses fewer than 16 bytes.
func TestDecodeHeader(t *testing.T) {
	h := Header{Magic: Magic, Valid: 1, Version: DiskVersion, ChunkSize: 8}
	buf := make([]byte, HeaderSize)
	h.encode(buf)
	if got, err := DecodeHeader(buf); err != nil || got != h {
		t.Fatalf("DecodeHeader = %+v, %v; want %+v", got, err, h)
	}
	if _, err := DecodeHeader(buf[:HeaderSize-1]); err == nil {
		t.Fatal("DecodeHeader of 15 bytes: no error")
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
	g := NewGeometry(1) // 512-byte chunks: 32 records per area, stride 33
	if g.ExceptionsPerArea != 32 {
		t.Fatalf("epa = %d, want 32", g.ExceptionsPerArea)
	}
	for a, want := range []exstore.Chunk{1, 34, 67, 100} {
		if got := g.AreaLocation(uint64(a)); got != want {
			t.Errorf("areaLocation(%d) = %d, want %d", a, got, want)
		}
		if got, ok := g.AreaAt(want); !ok || got != uint64(a) {
			t.Errorf("areaAt(%d) = %d, %v; want area %d", want, got, ok, a)
		}
	}
	for _, c := range []exstore.Chunk{0, 2, 33, 35, 66, 68} {
		if a, ok := g.AreaAt(c); ok {
			t.Errorf("areaAt(%d) = area %d, want a data chunk (or the header)", c, a)
		}
	}
	for c, want := range map[exstore.Chunk]exstore.Chunk{1: 2, 2: 2, 33: 33, 34: 35, 67: 68, 68: 68} {
		if got := g.SkipMetadata(c); got != want {
			t.Errorf("skipMetadata(%d) = %d, want %d", c, got, want)
		}
	}
	if g := NewGeometry(8); g.ExceptionsPerArea != 256 || g.AreaLocation(1) != 258 {
		t.Errorf("4 KiB chunks: epa %d, area 1 at %d; want 256 and 258 (the kernel's one metadata chunk per 256 data chunks)", g.ExceptionsPerArea, g.AreaLocation(1))
	}
}

// DataChunks counts the chunks below next that are neither the header nor
// a metadata area, as a walk over every chunk does.
func TestGeometry_DataChunks(t *testing.T) {
	for _, chunk := range []exstore.Sector{1, 8} {
		g := NewGeometry(chunk)
		var data uint64
		for next := exstore.Chunk(0); next < 3*exstore.Chunk(g.ExceptionsPerArea)+10; next++ {
			if got := g.DataChunks(next); got != data {
				t.Fatalf("chunk %d: DataChunks(%d) = %d, want %d", chunk, next, got, data)
			}
			if _, area := g.AreaAt(next); next != 0 && !area {
				data++
			}
		}
	}
}

// A COW of FullSize takes an exception for every chunk of the origin, for
// origins ending on and off an area boundary; MinDeviceChunks take one.
func TestGeometry_FullSize(t *testing.T) {
	g := NewGeometry(1) // 32 records per area
	for _, originChunks := range []int64{1, 31, 32, 33, 64, 100} {
		dev := storetest.NewCrashDev("cow", g.FullSize(originChunks*g.ChunkBytes-1))
		s, err := Open(dev, Options{ChunkSize: g.Chunk})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Load(func(exstore.Exception) error { return nil }); err != nil {
			t.Fatal(err)
		}
		for old := range originChunks {
			c, err := s.Prepare()
			if err == nil {
				err = s.Commit(exstore.Exception{Old: exstore.Chunk(old), New: c})
			}
			if err != nil {
				t.Fatalf("origin of %d chunks, COW of %d bytes: exception %d: %v", originChunks, dev.Size(), old, err)
			}
		}
		s.Close()
	}
	dev := storetest.NewCrashDev("cow", MinDeviceChunks*g.ChunkBytes)
	s, err := Open(dev, Options{ChunkSize: g.Chunk})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Load(func(exstore.Exception) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(); err != nil {
		t.Fatalf("COW of MinDeviceChunks: %v", err)
	}
	if _, err := s.Prepare(); err == nil {
		t.Fatalf("COW of MinDeviceChunks took two exceptions; MinDeviceChunks is not the minimum")
	}
}
