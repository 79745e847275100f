// Package image keeps the durable image of a memory volume: a plain raw
// image of the volume, updated one checkpoint at a time so that a power
// loss at any instant leaves exactly one complete checkpoint in it, never
// a mix of two.
//
// A checkpoint is written as a transaction (Begin, Put per chunk, Commit).
// Its chunks go to a redo journal beside the image first; once they and a
// commit record are durable, Commit returns, and the chunks are copied
// into the raw image in the background ("apply"), which is then made
// durable and the journal recycled. Open replays a committed journal that
// was not fully applied, so after Open (or once an apply has ended) PATH
// holds the newest checkpoint as a raw image that qemu-img, losetup and
// nbdcopy open as they are.
//
// # On-disk layout
//
// PATH is the raw image: byte i of the volume at byte i, nothing else, its
// size the volume's. The journal (PATH+".journal" unless Options say
// otherwise) holds all the metadata. Every integer is little-endian; CRCs
// are CRC-32C (Castagnoli).
//
//	journal   0        4096     8192                         end
//	        +--------+--------+-----------+------+-----------+----------
//	        | slot 0 | slot 1 | segment   | data | segment   | .. stale
//	        +--------+--------+-----------+------+-----------+----------
//	slot g%2 holds header generation g; segments of the committed but
//	not yet applied checkpoints run from 8192 to the header's end
//
//	header slot (4096 bytes; bytes 128 up to 4096 are zero)
//	  byte  0  [8] magic        "DXCKJRNL"
//	  byte  8  le32 version     1
//	  byte 12  le32 flags       bit 0: the first checkpoint is being
//	                            written in place (see below); other
//	                            bits are reserved, 0
//	  byte 16  le64 gen         header generation; the valid slot with the
//	                            higher gen is the header
//	  byte 24  le64 size        image size in bytes
//	  byte 32  le64 chunk       chunk size in bytes, a power of two >= 4096
//	  byte 40  le64 journal id  random, fixed at create; every segment
//	                            carries it, so old bytes of another journal
//	                            are never taken for this one's
//	  byte 48  le64 applied     the image holds checkpoint `applied` whole
//	  byte 56  le64 committed   the newest durable checkpoint (>= applied)
//	  byte 64  le64 end         journal offset past the last segment of
//	                            checkpoints applied+1 .. committed (8192
//	                            when committed == applied)
//	  byte 72  le64 time        checkpoint `committed`: Unix nanoseconds
//	  byte 80  le64 bytes       checkpoint `committed`: bytes written back
//	  byte 88  le64 chunks      checkpoint `committed`: chunks written back
//	  byte 96  le64 created     Unix nanoseconds of Create
//	  byte 104 le32 crc         CRC-32C of bytes 0..104
//
//	segment (at a 4096-aligned offset >= 8192): an 8192-byte descriptor,
//	then the data of its entries in order, each padded to 4096 bytes
//	  byte  0  [8] magic        "DXCKSEG1"
//	  byte  8  le64 seq         checkpoint the segment belongs to
//	  byte 16  le64 journal id  the header's
//	  byte 24  le32 count       entries, 1 .. 508
//	  byte 28  le32 crc         CRC-32C of the descriptor with this field 0
//	  byte 32  le64 data        padded data bytes after the descriptor
//	  byte 40  [24]             zero
//	  byte 64+16*i  entry i:
//	      le64 chunk index   le32 length (== chunk but for the last, short,
//	      chunk of the image)   le32 CRC-32C of the chunk's data
//
// # Update rules
//
// Begin(seq) starts writing segments at 8192. Put gathers chunks into a
// segment buffer and hands it to a background write (O_DIRECT, up to
// SegmentBytes, 4 MiB, at a time; two writes in flight) when full. A
// caller may read a chunk straight into the segment buffer (Buffer), so
// that each byte is copied once, from the volume's memory, and
// checksummed once, there.
// Commit waits for the segment writes, fdatasyncs the journal, then
// writes the header with committed = seq and end past its segments into
// the slot of the older generation, and fdatasyncs again: that header
// write is the commit record, and the checkpoint is durable once it
// returns. The apply then takes the chunks from memory (when the
// checkpoint fitted in Options.ApplyCache) or reads the segments back
// checking every CRC first, writes them into the image, fdatasyncs the
// image, and writes a header with applied = committed and end = 8192
// (next generation, other slot), fdatasynced before the journal is
// written again (Begin waits for the apply). A torn header write leaves
// the other slot, one generation older, valid; either generation
// describes a journal whose segments up to its end are intact, because
// segments are only overwritten after the header that no longer needs
// them is durable. A failed segment write (a full disk) fails the
// checkpoint before its header is written: the previous one is untouched.
//
// The first checkpoint skips the journal: there is no older checkpoint
// for it to protect, and it is usually the whole volume. Begin(1) sets
// flag bit 0 in a new header (or, if it is already set, zeroes the image,
// which an interrupted first checkpoint left partly written), Put writes
// the chunks straight into the image, and Commit fdatasyncs the image and
// then writes the header with committed = applied = 1 and the flag
// cleared. Until then there is no checkpoint, and ReadAt returns zeroes.
// No descriptor is written, so its chunks are not checksummed: the
// image's bytes are only read once that header is durable, after the
// image's flush.
//
// Open takes the valid slot with the higher generation. If committed >
// applied it reads every segment up to end and checks magic, journal id,
// sequence and every CRC before it writes anything: a damaged committed
// journal is refused (the image, still at checkpoint applied, is left as
// it is), never half applied. Then it applies as above; applying twice
// writes the same bytes, so a crash during recovery is harmless.
package image

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

const (
	// Version is the only journal format version.
	Version = 1

	headerMagic  = "DXCKJRNL"
	segmentMagic = "DXCKSEG1"

	slotSize  = 4096
	dataStart = 2 * slotSize // first segment
	align     = 4096         // journal and O_DIRECT alignment

	headerFields = 104 // bytes covered by the header CRC
	headerLen    = 108

	descSize   = 8192 // segment descriptor
	descHead   = 64
	entrySize  = 16
	maxEntries = (descSize - descHead) / entrySize // 508

	maxSize = 1 << 60 // largest image: chunk arithmetic cannot overflow

	// flagFirst: checkpoint 1 is being written straight into the image,
	// which may hold part of it; with no checkpoint committed the image
	// reads as zeroes whatever it holds, and the next Begin(1) zeroes it.
	flagFirst = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// header is one header slot, decoded.
type header struct {
	Version   uint32
	Flags     uint32
	Gen       uint64
	Size      int64
	Chunk     int64
	JournalID uint64
	Applied   uint64
	Committed uint64
	End       int64
	Time      int64 // Unix nanoseconds of checkpoint Committed
	Bytes     int64
	Chunks    int64
	Created   int64
}

// encode writes h, with its CRC, into b[:slotSize] (zeroing the rest).
func (h header) encode(b []byte) {
	clear(b[:slotSize])
	le := binary.LittleEndian
	copy(b, headerMagic)
	le.PutUint32(b[8:], Version)
	le.PutUint32(b[12:], h.Flags)
	le.PutUint64(b[16:], h.Gen)
	le.PutUint64(b[24:], uint64(h.Size))
	le.PutUint64(b[32:], uint64(h.Chunk))
	le.PutUint64(b[40:], h.JournalID)
	le.PutUint64(b[48:], h.Applied)
	le.PutUint64(b[56:], h.Committed)
	le.PutUint64(b[64:], uint64(h.End))
	le.PutUint64(b[72:], uint64(h.Time))
	le.PutUint64(b[80:], uint64(h.Bytes))
	le.PutUint64(b[88:], uint64(h.Chunks))
	le.PutUint64(b[96:], uint64(h.Created))
	le.PutUint32(b[headerFields:], crc(b[:headerFields]))
}

// errNoMagic: the slot does not start with the header magic at all (a
// file that is not a journal, or a slot never written).
var errNoMagic = fmt.Errorf("no journal header magic %q", headerMagic)

// decodeHeader checks and decodes one slot; the error says what is wrong.
func decodeHeader(b []byte) (header, error) {
	if len(b) < headerLen {
		return header{}, fmt.Errorf("header slot is %d bytes, want %d", len(b), headerLen)
	}
	if string(b[:8]) != headerMagic {
		return header{}, errNoMagic
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(b[headerFields:]), crc(b[:headerFields]); got != want {
		return header{}, fmt.Errorf("header checksum is %#08x, want %#08x (torn or damaged)", got, want)
	}
	h := header{
		Version:   le.Uint32(b[8:]),
		Flags:     le.Uint32(b[12:]),
		Gen:       le.Uint64(b[16:]),
		Size:      int64(le.Uint64(b[24:])),
		Chunk:     int64(le.Uint64(b[32:])),
		JournalID: le.Uint64(b[40:]),
		Applied:   le.Uint64(b[48:]),
		Committed: le.Uint64(b[56:]),
		End:       int64(le.Uint64(b[64:])),
		Time:      int64(le.Uint64(b[72:])),
		Bytes:     int64(le.Uint64(b[80:])),
		Chunks:    int64(le.Uint64(b[88:])),
		Created:   int64(le.Uint64(b[96:])),
	}
	return h, h.check()
}

// check refuses field values no writer produces.
func (h header) check() error {
	switch {
	case h.Version != Version:
		return fmt.Errorf("journal format version %d, this daxsnap reads only version %d", h.Version, Version)
	case h.Flags&^flagFirst != 0:
		return fmt.Errorf("unknown header flags %#x", h.Flags)
	case h.Flags&flagFirst != 0 && h.Committed != 0:
		return fmt.Errorf("checkpoint %d is committed, yet the header says the first one is being written", h.Committed)
	case h.Chunk < 4096 || h.Chunk&(h.Chunk-1) != 0 || h.Chunk > 1<<30:
		return fmt.Errorf("chunk size %d is not a power of two from 4096 to 1 GiB", h.Chunk)
	case h.Size <= 0 || h.Size%512 != 0 || h.Size > maxSize:
		return fmt.Errorf("image size %d is not a positive multiple of 512 up to 2^60", h.Size)
	case h.Committed < h.Applied:
		return fmt.Errorf("committed checkpoint %d is older than applied checkpoint %d", h.Committed, h.Applied)
	case h.End < dataStart || h.End%align != 0:
		return fmt.Errorf("journal end %d is not a 4096-aligned offset from %d", h.End, dataStart)
	case h.Committed == h.Applied && h.End != dataStart:
		return fmt.Errorf("journal end %d with nothing to apply (want %d)", h.End, dataStart)
	case h.Bytes < 0 || h.Chunks < 0 || h.Chunks > h.chunkCount():
		return fmt.Errorf("checkpoint counts %d bytes, %d chunks are impossible for the image", h.Bytes, h.Chunks)
	}
	return nil
}

// chunkCount is the number of chunks of the image, the last maybe short.
func (h header) chunkCount() int64 { return (h.Size + h.Chunk - 1) / h.Chunk }

// entry is one chunk of a segment.
type entry struct {
	Chunk int64
	Len   int64
	CRC   uint32
}

// padded is the journal space an entry's data takes.
func (e entry) padded() int64 { return roundUp(e.Len, align) }

// desc is a segment descriptor, decoded.
type desc struct {
	Seq       uint64
	JournalID uint64
	Data      int64
	Entries   []entry
}

// encode writes d into b[:descSize].
func (d desc) encode(b []byte) {
	clear(b[:descSize])
	le := binary.LittleEndian
	copy(b, segmentMagic)
	le.PutUint64(b[8:], d.Seq)
	le.PutUint64(b[16:], d.JournalID)
	le.PutUint32(b[24:], uint32(len(d.Entries)))
	le.PutUint64(b[32:], uint64(d.Data))
	for i, e := range d.Entries {
		p := b[descHead+entrySize*i:]
		le.PutUint64(p, uint64(e.Chunk))
		le.PutUint32(p[8:], uint32(e.Len))
		le.PutUint32(p[12:], e.CRC)
	}
	le.PutUint32(b[28:], crc(b[:descSize]))
}

// decodeDesc checks and decodes a descriptor against the header it must
// belong to; the error says what is wrong with it.
func decodeDesc(b []byte, h header) (desc, error) {
	if len(b) < descSize {
		return desc{}, fmt.Errorf("segment descriptor is %d bytes, want %d", len(b), descSize)
	}
	if string(b[:8]) != segmentMagic {
		return desc{}, fmt.Errorf("no segment magic %q", segmentMagic)
	}
	le := binary.LittleEndian
	var tmp [descSize]byte
	copy(tmp[:], b[:descSize])
	le.PutUint32(tmp[28:], 0)
	if got, want := le.Uint32(b[28:]), crc(tmp[:]); got != want {
		return desc{}, fmt.Errorf("segment descriptor checksum is %#08x, want %#08x (torn or damaged)", got, want)
	}
	d := desc{Seq: le.Uint64(b[8:]), JournalID: le.Uint64(b[16:]), Data: int64(le.Uint64(b[32:]))}
	if d.JournalID != h.JournalID {
		return desc{}, fmt.Errorf("segment of journal %#x, not of this journal (%#x)", d.JournalID, h.JournalID)
	}
	n := le.Uint32(b[24:])
	if n == 0 || n > maxEntries {
		return desc{}, fmt.Errorf("segment has %d entries, want 1 to %d", n, maxEntries)
	}
	var sum int64
	last := h.chunkCount() - 1
	for i := range int(n) {
		p := b[descHead+entrySize*i:]
		e := entry{Chunk: int64(le.Uint64(p)), Len: int64(le.Uint32(p[8:])), CRC: le.Uint32(p[12:])}
		if e.Chunk < 0 || e.Chunk > last {
			return desc{}, fmt.Errorf("segment entry %d names chunk %d, outside the image's %d chunks", i, e.Chunk, last+1)
		}
		if want := min(h.Chunk, h.Size-e.Chunk*h.Chunk); e.Len != want {
			return desc{}, fmt.Errorf("segment entry %d (chunk %d) holds %d bytes, want %d", i, e.Chunk, e.Len, want)
		}
		d.Entries = append(d.Entries, e)
		sum += e.padded()
	}
	if sum != d.Data {
		return desc{}, fmt.Errorf("segment says %d data bytes, its entries hold %d", d.Data, sum)
	}
	return d, nil
}

func roundUp(n, a int64) int64 { return (n + a - 1) / a * a }
