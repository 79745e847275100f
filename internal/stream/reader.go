package stream

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Record is one data record: Data at Off (Zero: Len zero bytes there).
type Record struct {
	Zero bool
	Off  int64
	Len  int64
	// Data is the record's content; it is valid until the next call of
	// Next.
	Data []byte
}

// Summary is what a whole stream held, as its trailer states and the
// Reader checked.
type Summary struct {
	Records   uint64 // data records ('w' and 'z')
	DataBytes uint64 // bytes of 'w' data
	Zeroes    uint64 // bytes the 'z' records zero
	Length    int64  // bytes of the whole stream
	Sum       [32]byte
}

// Reader reads and checks one v2 stream.
type Reader struct {
	r          *bufio.Reader
	h          hash.Hash
	off        int64 // bytes read
	hdr        Header
	next       int64 // lowest offset the next data record may have
	pending    byte  // a data record's tag read while reading the metadata
	pendingLen uint64
	pendingAt  int64
	trailed    bool // the checksum record is read
	sum        Summary
	buf        []byte
	done       bool
}

// NewReader reads the banner and metadata of a stream from r.
func NewReader(r io.Reader) (*Reader, error) {
	sr := &Reader{r: bufio.NewReaderSize(r, 64<<10), h: sha256.New()}
	banner := make([]byte, len(BannerV2))
	if err := sr.full(banner, "the banner"); err != nil {
		return nil, err
	}
	if string(banner) != BannerV2 {
		return nil, fmt.Errorf("%w: banner %q is not %q: not a daxsnap send stream (rbd diff v2)", ErrCorrupt, banner, BannerV2)
	}
	var seen [256]bool
	for {
		at := sr.off
		tag, n, err := sr.head()
		if err != nil {
			return nil, err
		}
		if tag == TagWrite || tag == TagZero || tag == TagSum || tag == TagEnd {
			sr.pending, sr.pendingLen, sr.pendingAt = tag, n, at
			break
		}
		if seen[tag] && (tag == TagFrom || tag == TagTo || tag == TagSize || tag == TagHeader) {
			return nil, sr.corrupt(at, "a second %q record", tag)
		}
		seen[tag] = true
		if err := sr.meta(tag, n, at); err != nil {
			return nil, err
		}
	}
	switch {
	case !seen[TagHeader]:
		return nil, fmt.Errorf("%w: no daxsnap header record ('D'): a plain rbd diff carries no checksums; only streams of `daxsnap send` are received", ErrCorrupt)
	case !seen[TagTo]:
		return nil, fmt.Errorf("%w: no to-snapshot record ('t')", ErrCorrupt)
	case !seen[TagSize]:
		return nil, fmt.Errorf("%w: no image size record ('s')", ErrCorrupt)
	}
	return sr, nil
}

// Header is the stream's metadata.
func (r *Reader) Header() Header { return r.hdr }

// full reads len(p) bytes, hashing them; a short read is ErrTruncated.
func (r *Reader) full(p []byte, what string) error {
	n, err := io.ReadFull(r.r, p)
	r.h.Write(p[:n])
	r.off += int64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: it ends at byte %d, inside %s", ErrTruncated, r.off, what)
	}
	return err
}

// head reads a record's tag and, but for the end record, its length.
func (r *Reader) head() (byte, uint64, error) {
	var t [1]byte
	if r.pending != 0 {
		t[0], r.pending = r.pending, 0
		return t[0], r.pendingLen, nil
	}
	// The trailer's checksum covers the bytes before its tag: read the
	// tag unhashed and take the sum only for the trailer (a Sum per
	// record would finalize a copy of the hash on every data record).
	b, err := r.r.ReadByte()
	if err == io.EOF {
		return 0, 0, fmt.Errorf("%w: it ends at byte %d, inside a record's tag (the end record is missing)", ErrTruncated, r.off)
	} else if err != nil {
		return 0, 0, err
	}
	if b == TagSum {
		copy(r.sum.Sum[:], r.h.Sum(nil))
	}
	t[0] = b
	r.h.Write(t[:])
	r.off++
	if t[0] == TagEnd {
		return TagEnd, 0, nil
	}
	var l [8]byte
	if err := r.full(l[:], fmt.Sprintf("the length of a %q record", t[0])); err != nil {
		return 0, 0, err
	}
	return t[0], binary.LittleEndian.Uint64(l[:]), nil
}

func (r *Reader) corrupt(at int64, format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrCorrupt, at, fmt.Sprintf(format, args...))
}

// payload reads a record's payload of n bytes, at most max.
func (r *Reader) payload(tag byte, n uint64, max int, at int64) ([]byte, error) {
	if n > uint64(max) {
		return nil, r.corrupt(at, "a %q record of %d bytes (at most %d)", tag, n, max)
	}
	// Grow the buffer as data arrives, not as far as a length claims:
	// a stream cut short makes no large allocation.
	r.buf = r.buf[:0]
	for uint64(len(r.buf)) < n {
		chunk := min(n-uint64(len(r.buf)), 1<<20)
		r.buf = append(r.buf, make([]byte, chunk)...)
		if err := r.full(r.buf[uint64(len(r.buf))-chunk:], fmt.Sprintf("a %q record", tag)); err != nil {
			return nil, err
		}
	}
	return r.buf, nil
}

func (r *Reader) meta(tag byte, n uint64, at int64) error {
	switch tag {
	case TagFrom, TagTo:
		p, err := r.payload(tag, n, 4+MaxName, at)
		if err != nil {
			return err
		}
		if len(p) < 4 || uint64(binary.LittleEndian.Uint32(p))+4 != n || len(p) == 4 {
			return r.corrupt(at, "a %q record of %d bytes does not hold one non-empty name", tag, n)
		}
		if tag == TagFrom {
			r.hdr.From = string(p[4:])
		} else {
			r.hdr.To = string(p[4:])
		}
	case TagSize:
		p, err := r.payload(tag, n, 8, at)
		if err != nil {
			return err
		}
		if n != 8 {
			return r.corrupt(at, "a size record of %d bytes, not 8", n)
		}
		size := binary.LittleEndian.Uint64(p)
		if size == 0 || size%512 != 0 || size > 1<<62 {
			return r.corrupt(at, "image size %d is not a positive multiple of 512", size)
		}
		r.hdr.Size = int64(size)
	case TagHeader:
		p, err := r.payload(tag, n, headerLen, at)
		if err != nil {
			return err
		}
		if n != headerLen || string(p[:8]) != magic {
			return r.corrupt(at, "a 'D' record that is not daxsnap's header")
		}
		if v := binary.LittleEndian.Uint32(p[8:]); v != Version {
			return r.corrupt(at, "daxsnap stream version %d; this daxsnap reads version %d: receive it with the daxsnap that sent it", v, Version)
		}
		l := binary.LittleEndian.Uint64(p[16:])
		if l > 1<<62 {
			return r.corrupt(at, "stream length %d", l)
		}
		r.hdr.Length = int64(l)
	default:
		return r.skip(tag, n)
	}
	return nil
}

// skip passes over a record of a tag the reader does not know, as v2
// readers do; the checksum still covers it.
func (r *Reader) skip(tag byte, n uint64) error {
	m, err := io.CopyN(r.h, r.r, int64(min(n, 1<<62)))
	r.off += m
	if err == io.EOF {
		return fmt.Errorf("%w: it ends at byte %d, inside a %q record", ErrTruncated, r.off, tag)
	}
	return err
}

// Next returns the next data record, or io.EOF after the trailer and end
// record, which it checks: the checksum, the counts, and that nothing
// follows.
func (r *Reader) Next() (Record, error) {
	if r.done {
		return Record{}, io.EOF
	}
	for {
		at := r.off
		if r.pending != 0 {
			at = r.pendingAt
		}
		tag, n, err := r.head()
		if err != nil {
			return Record{}, err
		}
		switch tag {
		case TagWrite, TagZero:
			return r.data(tag, n, at)
		case TagSum:
			if err := r.trailer(n, at); err != nil {
				return Record{}, err
			}
		case TagEnd:
			return Record{}, r.end(at)
		case TagFrom, TagTo, TagSize, TagHeader:
			return Record{}, r.corrupt(at, "a %q (metadata) record after the data records began", tag)
		default:
			if err := r.skip(tag, n); err != nil {
				return Record{}, err
			}
		}
	}
}

func (r *Reader) data(tag byte, n uint64, at int64) (Record, error) {
	if r.trailed {
		return Record{}, r.corrupt(at, "a data record after the checksum record")
	}
	var ext [extentHead]byte
	if n < extentHead {
		return Record{}, r.corrupt(at, "a %q record of %d bytes, shorter than its offset and length", tag, n)
	}
	if err := r.full(ext[:], fmt.Sprintf("a %q record", tag)); err != nil {
		return Record{}, err
	}
	off, l := binary.LittleEndian.Uint64(ext[:]), binary.LittleEndian.Uint64(ext[8:])
	switch {
	case l == 0:
		return Record{}, r.corrupt(at, "an empty %q record", tag)
	case off > uint64(r.hdr.Size) || l > uint64(r.hdr.Size)-off:
		return Record{}, r.corrupt(at, "extent %d+%d is past the image's %d bytes", off, l, r.hdr.Size)
	case int64(off) < r.next:
		return Record{}, r.corrupt(at, "extent at %d is out of order (the previous one ends at %d)", off, r.next)
	case tag == TagZero && n != extentHead:
		return Record{}, r.corrupt(at, "a zero record of %d bytes, not %d", n, extentHead)
	case tag == TagWrite && n-extentHead != l:
		return Record{}, r.corrupt(at, "a data record of %d bytes holding %d bytes of data", n, l)
	}
	r.next = int64(off + l)
	r.sum.Records++
	rec := Record{Zero: tag == TagZero, Off: int64(off), Len: int64(l)}
	if tag == TagZero {
		r.sum.Zeroes += l
		return rec, nil
	}
	p, err := r.payload(tag, l, MaxRecord, at)
	if err != nil {
		return Record{}, err
	}
	r.sum.DataBytes += l
	rec.Data = p
	return rec, nil
}

func (r *Reader) trailer(n uint64, at int64) error {
	want := r.sum.Sum
	p, err := r.payload(TagSum, n, sumLen, at)
	if err != nil {
		return err
	}
	if n != sumLen {
		return r.corrupt(at, "a checksum record of %d bytes, not %d", n, sumLen)
	}
	records, data := binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])
	if !bytes.Equal(p[16:], want[:]) {
		return r.corrupt(at, "SHA-256 of the stream is %x, its trailer says %x: the stream was changed on its way", want, p[16:])
	}
	if records != r.sum.Records || data != r.sum.DataBytes {
		return r.corrupt(at, "the trailer counts %d records of %d bytes, the stream holds %d of %d", records, data, r.sum.Records, r.sum.DataBytes)
	}
	r.trailed = true
	return nil
}

func (r *Reader) end(at int64) error {
	if !r.trailed {
		return r.corrupt(at, "the end record comes without the checksum record ('K') before it")
	}
	if _, err := r.r.ReadByte(); err == nil {
		return r.corrupt(r.off, "bytes after the end record")
	} else if !errors.Is(err, io.EOF) {
		return err
	}
	r.sum.Length = r.off
	if r.hdr.Length != 0 && r.hdr.Length != r.off {
		return r.corrupt(at, "the stream is %d bytes, its header says %d", r.off, r.hdr.Length)
	}
	r.done = true
	return io.EOF
}

// Summary is what the stream held; complete once Next returned io.EOF.
func (r *Reader) Summary() Summary { return r.sum }

// Verify reads a whole stream and checks it, returning its header and
// summary, or the first thing wrong with it.
func Verify(rd io.Reader) (Header, Summary, error) {
	r, err := NewReader(rd)
	if err != nil {
		return Header{}, Summary{}, err
	}
	for {
		if _, err := r.Next(); err == io.EOF {
			return r.hdr, r.sum, nil
		} else if err != nil {
			return r.hdr, r.sum, err
		}
	}
}
