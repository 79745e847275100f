package persistent

import (
	"bufio"
	"fmt"
	"io"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// Report is what Inspect finds on a COW device: the header as stored, the
// layout it implies, every metadata area and exception, and findings that
// are suspicious without making the store unusable.
type Report struct {
	Path             string
	DeviceBytes      int64
	LogicalBlockSize int

	Header Header
	// Fresh means the magic is 0: there is no store yet, and opening one
	// creates it.
	Fresh bool

	// The layout, known once the header is valid.
	ChunkSize         exstore.Sector
	ExceptionsPerArea uint64
	DeviceChunks      exstore.Chunk

	Areas      []AreaReport
	Exceptions []exstore.Exception

	// What a store loaded from this device would report (see exstore.Store).
	NextFree                   exstore.Chunk
	Allocated, Total, Metadata exstore.Sector

	HeaderTailDirty bool     // bytes 16.. of chunk 0 are not all zero
	Notes           []string // suspicious but not fatal
	Problem         string   // the error Inspect returned, if any

	headerRead  bool // Header is filled in
	layoutKnown bool // ChunkSize, ExceptionsPerArea, DeviceChunks are
	done        bool // the scan finished: usage is known
}

// AreaReport describes one metadata area.
type AreaReport struct {
	Index   uint64
	Chunk   exstore.Chunk
	Records uint64
	Full    bool
	// DirtyTail: the end marker record or the bytes after it are not all
	// zero. The kernel and daxsnap zero an area before its first record and
	// clear merged records, so this means damage or a foreign writer.
	DirtyTail bool
}

// Inspect reads the COW device dev the way Load does, without changing
// it, and reports everything it finds. On a damaged device it returns the
// report as far as it got along with the error (matching exstore.ErrCorrupt
// or exstore.ErrUnsupportedVersion), so a caller can show both. The
// exceptions of an invalidated store are read too, although the kernel
// ignores them; problems among them are notes, not errors.
func Inspect(dev backing.Device) (*Report, error) {
	r := &Report{Path: dev.Path(), DeviceBytes: dev.Size(), LogicalBlockSize: dev.LogicalBlockSize()}
	err := r.inspect(dev)
	if err != nil {
		err = fmt.Errorf("inspect %s: %w", dev.Path(), err)
		r.Problem = err.Error()
	}
	return r, err
}

func (r *Report) inspect(dev backing.Device) error {
	hdr, err := readHeader(dev)
	if err != nil {
		return err
	}
	r.Header, r.headerRead = hdr, true
	if hdr.Magic == 0 {
		r.Fresh = true
		return nil
	}
	chunk, err := checkHeader(hdr, dev.LogicalBlockSize(), 0)
	if err != nil {
		return err
	}
	g := NewGeometry(chunk)
	r.ChunkSize, r.ExceptionsPerArea = chunk, g.ExceptionsPerArea
	r.DeviceChunks = exstore.Chunk(dev.Size() / g.ChunkBytes)
	if r.DeviceChunks < 2 {
		return exstore.Corruptf("COW device is %d bytes, smaller than the 2 chunks of %d sectors its header and first metadata area take", dev.Size(), chunk)
	}
	r.layoutKnown = true
	buf := make([]byte, g.ChunkBytes)
	if _, err := dev.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("read header chunk: %w", err)
	}
	r.HeaderTailDirty = !allZero(buf[headerSize:])
	if r.HeaderTailDirty {
		r.note("header chunk: bytes %d to %d are not all zero (the kernel writes zeroes there)", headerSize, g.ChunkBytes-1)
	}
	return r.scan(dev, g, buf)
}

func (r *Report) scan(dev backing.Device, g Geometry, buf []byte) error {
	olds := make(map[exstore.Chunk]exstore.Chunk)
	sc := scanner{dev: dev, g: g, devChunks: r.DeviceChunks, buf: buf,
		record: func(a, i uint64, e exstore.Exception) error {
			if prev, dup := olds[e.Old]; dup {
				r.note("origin chunk %d has two exceptions (COW chunks %d and %d, the later in area %d record %d): the snapshot would read only one of them",
					e.Old, prev, e.New, a, i)
			}
			olds[e.Old] = e.New
			r.Exceptions = append(r.Exceptions, e)
			return nil
		},
		areaDone: func(a, n uint64, full bool) {
			ar := AreaReport{Index: a, Chunk: g.AreaLocation(a), Records: n, Full: full}
			ar.DirtyTail = !full && !allZero(buf[n*recordSize:])
			if ar.DirtyTail {
				r.note("metadata area %d (chunk %d): bytes after the end marker (record %d) are not zero", a, ar.Chunk, n)
			}
			r.Areas = append(r.Areas, ar)
		},
	}
	st, err := sc.run()
	if err != nil {
		if r.Header.Valid == 0 {
			r.note("the snapshot is invalidated, so the kernel ignores its exceptions; reading them stopped at: %v", err)
			return nil
		}
		return err
	}
	r.NextFree = st.nextFree
	r.Allocated = exstore.Sector(st.nextFree) * g.Chunk
	r.Total = exstore.Sector(dev.Size() / exstore.SectorSize)
	r.Metadata = exstore.Sector(st.area+2) * g.Chunk
	r.done = true
	return nil
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// WriteText renders the report for people, one fact per line, every
// exception included.
func (r *Report) WriteText(w io.Writer) error { return r.write(w, everyException) }

// WriteSummary is WriteText without a line per exception: the header,
// layout, areas, usage, notes and error.
func (r *Report) WriteSummary(w io.Writer) error { return r.write(w, summary) }

// detail is how much of a report write prints.
type detail int

const (
	everyException detail = iota // a line per exception
	summary                      // the count of exceptions only
)

// headerState labels a header's valid field. Only a header with the
// magic is a header at all; the kernel takes any other value than 0 as
// valid, but writes only 0 and 1.
func headerState(h Header) string {
	switch {
	case h.Magic != Magic:
		return "not a snapshot header"
	case h.Valid == 0:
		return "INVALIDATED"
	case h.Valid == 1:
		return "valid"
	}
	return "neither 0 nor 1: damaged? the kernel would take it as valid"
}

func (r *Report) write(w io.Writer, d detail) error {
	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format+"\n", args...) }
	p("COW device:   %s (%d bytes, logical block %d bytes)", r.Path, r.DeviceBytes, r.LogicalBlockSize)
	switch {
	case !r.headerRead:
	case r.Fresh:
		p("header:       magic 0: no exception store yet; one is created when a persistent snapshot is loaded on it")
	default:
		h := r.Header
		p("header:       magic %#08x, valid %d (%s), version %d, chunk_size %d sectors", h.Magic, h.Valid, headerState(h), h.Version, h.ChunkSize)
	}
	if r.layoutKnown {
		p("layout:       %d bytes per chunk, %d exceptions per area, %d chunks on the device",
			r.ChunkSize.Bytes(), r.ExceptionsPerArea, r.DeviceChunks)
		for _, a := range r.Areas {
			state := "current"
			if a.Full {
				state = "full"
			}
			p("area %d:       chunk %d, %d records (%s)", a.Index, a.Chunk, a.Records, state)
		}
		p("exceptions:   %d", len(r.Exceptions))
		if d == everyException {
			for i, e := range r.Exceptions {
				p("  %d: origin chunk %d -> COW chunk %d", i, e.Old, e.New)
			}
		}
	}
	if r.done {
		p("usage:        %d/%d sectors allocated, %d metadata sectors, next free chunk %d", r.Allocated, r.Total, r.Metadata, r.NextFree)
	}
	for _, n := range r.Notes {
		p("note:         %s", n)
	}
	if r.Problem != "" {
		p("ERROR:        %s", r.Problem)
	}
	return bw.Flush()
}
