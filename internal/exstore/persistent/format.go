// Package persistent implements the persistent exception store (table store
// type P, or PO when userspace understands the Overflow status) in the
// on-disk format of the kernel's dm-snapshot (drivers/md/dm-snap-persistent.c),
// byte for byte: a COW device written here activates under the kernel's
// dm-snapshot and the other way round.
//
// # On-disk layout
//
// The COW device is divided into chunks of C sectors (C*512 bytes; C is a
// power of two, recorded in the header). Every integer is little-endian;
// there is no padding. E = C*512/16 is the number of exceptions per area.
//
//	chunk   0        1        2 .. E+1     E+2      E+3 .. 2E+2   2E+3
//	      +--------+--------+------------+--------+-------------+--------+--
//	      | header | area 0 | E data     | area 1 | E data      | area 2 | ..
//	      +--------+--------+------------+--------+-------------+--------+--
//	area a lives at chunk 1 + a*(E+1); every other chunk but 0 holds data
//
//	header, chunk 0 (bytes 16 up to the end of the chunk are zero)
//	  byte  0  le32 magic       0x70416e53, "SnAp" in byte order
//	                            0 means "no store yet": create one
//	  byte  4  le32 valid       0 = invalidated for good; anything else = valid
//	  byte  8  le32 version     1 (no other version exists; no compatibility)
//	  byte 12  le32 chunk_size  in sectors; overrides the table's chunk size
//
//	metadata area, one chunk = E records of 16 bytes
//	  byte 16*i+0  le64 old_chunk  origin chunk
//	  byte 16*i+8  le64 new_chunk  COW chunk holding its original contents
//	  The first record with new_chunk == 0 (0 is the header, never data)
//	  ends the list. Areas are filled in order; every area before the last
//	  is full (E records), the last one is partly filled or empty.
//
// # Update rules
//
// A fresh store writes the header and a zeroed area 0. Data chunks are
// handed out from chunk 2 upwards, skipping area chunks. Committing appends
// records to the current area in memory, then: if the area became full, the
// next area is zeroed first (so a reader never mistakes old bytes there for
// records); the device is flushed (data copied into the COW chunks, and the
// zeroed area, reach the media before the records that point to them); the
// area is written; the device is flushed again (the kernel uses
// REQ_PREFLUSH|REQ_FUA). After a crash the next free chunk is recovered as
// one past the highest new_chunk found (holes are possible: chunks handed
// out but never committed). Merging clears records from the end of the
// current area and rewrites it the same way; an area emptied by a merge is
// left zeroed, so the previous, full, area becomes the last one again.
package persistent

import (
	"encoding/binary"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/exstore"
)

const (
	// Magic identifies a persistent COW device: "SnAp".
	Magic = 0x70416e53
	// DiskVersion is the only on-disk format version.
	DiskVersion = 1

	headerSize = 16 // bytes of chunk 0 that carry fields
	recordSize = 16 // bytes per exception record

	// Byte offsets of the header fields, used in error messages.
	offMagic     = 0
	offValid     = 4
	offVersion   = 8
	offChunkSize = 12
)

// Header is the first 16 bytes of a persistent COW device, as stored.
type Header struct {
	Magic     uint32
	Valid     uint32
	Version   uint32
	ChunkSize uint32 // sectors
}

// HeaderSize is the number of bytes at the start of a COW device that carry
// the header's fields.
const HeaderSize = headerSize

// DecodeHeader reads the header from the first HeaderSize bytes of b, the
// start of a COW device, for a caller that inspects one without opening a
// store (a header whose Magic is not Magic holds no persistent store).
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < headerSize {
		return Header{}, fmt.Errorf("persistent header: %d bytes, want at least %d", len(b), headerSize)
	}
	return decodeHeader(b), nil
}

func decodeHeader(b []byte) Header {
	return Header{
		Magic:     binary.LittleEndian.Uint32(b[offMagic:]),
		Valid:     binary.LittleEndian.Uint32(b[offValid:]),
		Version:   binary.LittleEndian.Uint32(b[offVersion:]),
		ChunkSize: binary.LittleEndian.Uint32(b[offChunkSize:]),
	}
}

// encode writes h into b[:16]; the caller zeroes the rest of the chunk.
func (h Header) encode(b []byte) {
	binary.LittleEndian.PutUint32(b[offMagic:], h.Magic)
	binary.LittleEndian.PutUint32(b[offValid:], h.Valid)
	binary.LittleEndian.PutUint32(b[offVersion:], h.Version)
	binary.LittleEndian.PutUint32(b[offChunkSize:], h.ChunkSize)
}

func getRecord(area []byte, i uint64) exstore.Exception {
	b := area[i*recordSize:]
	return exstore.Exception{
		Old: exstore.Chunk(binary.LittleEndian.Uint64(b)),
		New: exstore.Chunk(binary.LittleEndian.Uint64(b[8:])),
	}
}

func putRecord(area []byte, i uint64, e exstore.Exception) {
	b := area[i*recordSize:]
	binary.LittleEndian.PutUint64(b, uint64(e.Old))
	binary.LittleEndian.PutUint64(b[8:], uint64(e.New))
}

// Geometry is the layout a chunk size implies: where the metadata areas
// are, and so which chunks hold data. Everything that sizes or reads a
// persistent COW device outside this package uses it rather than its own
// copy of the arithmetic.
type Geometry struct {
	Chunk             exstore.Sector // chunk size in sectors
	ChunkBytes        int64          // chunk size in bytes
	ExceptionsPerArea uint64         // records per metadata area (E)
}

// NewGeometry is the layout of a store with chunks of chunk sectors.
func NewGeometry(chunk exstore.Sector) Geometry {
	b := chunk.Bytes()
	return Geometry{Chunk: chunk, ChunkBytes: b, ExceptionsPerArea: uint64(b) / recordSize}
}

// MinDeviceChunks is the size, in chunks, of the smallest COW device that
// can hold one exception: the header, metadata area 0 and one data chunk.
const MinDeviceChunks = 3

// AreaLocation is the chunk holding metadata area a.
func (g Geometry) AreaLocation(a uint64) exstore.Chunk {
	return exstore.Chunk(1 + a*(g.ExceptionsPerArea+1))
}

// AreaAt reports whether chunk c holds a metadata area, and which.
func (g Geometry) AreaAt(c exstore.Chunk) (uint64, bool) {
	if c == 0 || (uint64(c)-1)%(g.ExceptionsPerArea+1) != 0 {
		return 0, false
	}
	return (uint64(c) - 1) / (g.ExceptionsPerArea + 1), true
}

// SkipMetadata returns c, or the chunk after it if c holds an area.
func (g Geometry) SkipMetadata(c exstore.Chunk) exstore.Chunk {
	if _, ok := g.AreaAt(c); ok {
		return c + 1
	}
	return c
}

// Offset is the byte offset of chunk c.
func (g Geometry) Offset(c exstore.Chunk) int64 { return int64(c) * g.ChunkBytes }

// DataChunks is the number of data chunks below chunk next: for a store
// whose next free chunk is next (Usage's allocated divided by the chunk
// size), the exceptions it holds, counting chunks handed out but never
// committed.
func (g Geometry) DataChunks(next exstore.Chunk) uint64 {
	if next < 2 {
		return 0
	}
	areas := (uint64(next) - 1 + g.ExceptionsPerArea) / (g.ExceptionsPerArea + 1)
	return uint64(next) - 1 - areas
}

// FullSize is the size in bytes of a COW device that holds a copy of
// every chunk of an origin of originBytes: the header, the data chunks
// and their metadata areas, and one area more (the area after a full one
// is zeroed before it is used).
func (g Geometry) FullSize(originBytes int64) int64 {
	data := (originBytes + g.ChunkBytes - 1) / g.ChunkBytes
	epa := int64(g.ExceptionsPerArea)
	return (1 + data/epa + 1 + data) * g.ChunkBytes
}
