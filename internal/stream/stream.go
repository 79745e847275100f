// Package stream is the format of `daxsnap send` and `daxsnap receive`:
// Ceph's rbd diff v2 (ceph doc/dev/rbd-diff.rst) with two records of
// daxsnap's own, a header ('D') and a checksum trailer ('K'). A v2 reader
// skips tags it does not know (each record says its length), so a daxsnap
// stream stays a valid rbd diff v2; the trailer's SHA-256 covers every
// byte before it, which lets a receiver verify the whole stream before it
// changes anything.
//
//	stream  = banner meta... data... trailer end
//	banner  = "rbd diff v2\n"                          12 bytes
//	record  = tag u8 | len le64 | payload[len]         (end: tag alone)
//
//	'f' from snapshot  | le32 n | name[n]              len = 4+n (incremental only)
//	't' to snapshot    | le32 n | name[n]              len = 4+n
//	's' image size     | le64 size                     len = 8
//	'D' daxsnap header | "daxsnap\x00" | le32 version=1 | le32 flags=0 | le64 stream length (0: unknown)
//	                                                    len = 24
//	'w' data           | le64 offset | le64 n | data[n] len = 16+n
//	'z' zeroes         | le64 offset | le64 n          len = 16
//	'K' checksum       | le64 data records | le64 data bytes | sha256[32]
//	                                                    len = 48; the SHA-256 of every byte from
//	                                                    the banner up to this record's tag
//	'e' end            (no length, as in Ceph's v2)
//
// The Reader is stricter than the format: it wants the daxsnap header and
// trailer, metadata before data, data records in ascending,
// non-overlapping order inside the image (as `rbd merge-diff` does), and
// nothing after 'e'. It skips other tags (covered by the checksum), as a
// v2 reader should. A Writer with V1 writes Ceph's rbd diff v1 instead
// (no lengths, no header, no trailer), for `rbd import-diff` and
// `rbd merge-diff`, which read only v1.
package stream

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Banners of the two rbd diff versions.
const (
	BannerV2 = "rbd diff v2\n"
	BannerV1 = "rbd diff v1\n"
)

// Record tags: Ceph's, then daxsnap's.
const (
	TagFrom   = 'f'
	TagTo     = 't'
	TagSize   = 's'
	TagWrite  = 'w'
	TagZero   = 'z'
	TagEnd    = 'e'
	TagHeader = 'D'
	TagSum    = 'K'
)

// Limits of what a Reader accepts.
const (
	MaxName   = 4096     // bytes of a snapshot name (rbd's limit)
	MaxRecord = 32 << 20 // bytes of one 'w' record's data
	Version   = 1        // of the daxsnap header
	magic     = "daxsnap\x00"
)

// Sizes of the fixed parts, for Length.
const (
	headerLen  = 24
	sumLen     = 48
	recordHead = 1 + 8 // tag and length
	extentHead = 16    // offset and length
)

// Errors a Reader returns, wrapped with where and what.
var (
	// ErrTruncated: the stream ends before its end record.
	ErrTruncated = errors.New("stream truncated")
	// ErrCorrupt: the stream is not what its format or checksum says.
	ErrCorrupt = errors.New("stream corrupt")
)

// Header is what a stream is of: an image of Size bytes as snapshot To,
// and for an incremental stream, the snapshot From it applies on.
type Header struct {
	From, To string
	Size     int64
	// Length of the whole stream in bytes, 0 if the sender did not know
	// it (for progress: the receiver's ETA).
	Length int64
}

// Incremental reports whether the stream applies on snapshot From.
func (h Header) Incremental() bool { return h.From != "" }

// Length is the length of a v2 stream of header h with data records of
// the given lengths and zero records zeros, for Header.Length.
func Length(h Header, writes []int64, zeros int) int64 {
	n := int64(len(BannerV2))
	if h.From != "" {
		n += recordHead + 4 + int64(len(h.From))
	}
	n += recordHead + 4 + int64(len(h.To))
	n += recordHead + 8 + recordHead + headerLen
	for _, w := range writes {
		n += recordHead + extentHead + w
	}
	n += int64(zeros) * (recordHead + extentHead)
	return n + recordHead + sumLen + 1
}

// Writer writes one stream.
type Writer struct {
	w       io.Writer
	h       hash.Hash
	v1      bool
	size    int64
	next    int64 // lowest offset the next data record may have
	records uint64
	bytes   uint64
	n       int64 // bytes written
	err     error
}

// NewWriter writes the banner and metadata of a stream of h to w. With
// v1 it writes rbd diff v1 (no daxsnap header, no trailer).
func NewWriter(w io.Writer, h Header, v1 bool) (*Writer, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	sw := &Writer{w: w, h: sha256.New(), v1: v1, size: h.Size}
	if v1 {
		sw.put([]byte(BannerV1))
	} else {
		sw.put([]byte(BannerV2))
	}
	if h.From != "" {
		sw.record(TagFrom, name(h.From))
	}
	sw.record(TagTo, name(h.To))
	sw.record(TagSize, binary.LittleEndian.AppendUint64(nil, uint64(h.Size)))
	if !v1 {
		p := append([]byte(magic), make([]byte, headerLen-len(magic))...)
		binary.LittleEndian.PutUint32(p[8:], Version)
		binary.LittleEndian.PutUint64(p[16:], uint64(h.Length))
		sw.record(TagHeader, p)
	}
	return sw, sw.err
}

func (h Header) check() error {
	switch {
	case h.To == "":
		return errors.New("stream: no snapshot name (To)")
	case len(h.To) > MaxName || len(h.From) > MaxName:
		return fmt.Errorf("stream: a snapshot name is longer than %d bytes", MaxName)
	case h.Size <= 0 || h.Size%512 != 0:
		return fmt.Errorf("stream: image size %d is not a positive multiple of 512", h.Size)
	case h.Length < 0:
		return fmt.Errorf("stream: negative stream length %d", h.Length)
	}
	return nil
}

func name(s string) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(s))), s...)
}

func (w *Writer) put(p []byte) {
	if w.err != nil {
		return
	}
	w.h.Write(p)
	n, err := w.w.Write(p)
	w.n += int64(n)
	w.err = err
}

// record writes tag, its length (v2 only) and payload.
func (w *Writer) record(tag byte, payload []byte) {
	head := []byte{tag}
	if !w.v1 {
		head = binary.LittleEndian.AppendUint64(head, uint64(len(payload)))
	}
	w.put(head)
	w.put(payload)
}

// extent checks a data record's place: inside the image, after the
// previous one.
func (w *Writer) extent(off, n int64) error {
	if w.err != nil {
		return w.err
	}
	if n <= 0 || off < w.next || off > w.size-n {
		return fmt.Errorf("stream: extent %d+%d is empty, out of order (next may start at %d) or past the image's %d bytes", off, n, w.next, w.size)
	}
	w.next = off + n
	w.records++
	return nil
}

// Write adds a data record: p is the image's content at off.
func (w *Writer) Write(off int64, p []byte) error {
	if len(p) > MaxRecord {
		return fmt.Errorf("stream: data record of %d bytes is over %d: split it", len(p), MaxRecord)
	}
	if err := w.extent(off, int64(len(p))); err != nil {
		return err
	}
	w.bytes += uint64(len(p))
	head := []byte{TagWrite}
	if !w.v1 {
		head = binary.LittleEndian.AppendUint64(head, uint64(extentHead+len(p)))
	}
	head = binary.LittleEndian.AppendUint64(head, uint64(off))
	head = binary.LittleEndian.AppendUint64(head, uint64(len(p)))
	w.put(head)
	w.put(p)
	return w.err
}

// Zero adds a zero record: n bytes at off are zero.
func (w *Writer) Zero(off, n int64) error {
	if err := w.extent(off, n); err != nil {
		return err
	}
	p := binary.LittleEndian.AppendUint64(nil, uint64(off))
	w.record(TagZero, binary.LittleEndian.AppendUint64(p, uint64(n)))
	return w.err
}

// Close writes the trailer (v2) and the end record. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	if !w.v1 {
		p := binary.LittleEndian.AppendUint64(nil, w.records)
		p = binary.LittleEndian.AppendUint64(p, w.bytes)
		w.record(TagSum, w.h.Sum(p))
	}
	w.put([]byte{TagEnd})
	return w.err
}

// Written is the number of bytes written so far.
func (w *Writer) Written() int64 { return w.n }
