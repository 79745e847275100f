package dm

import (
	"fmt"
	"slices"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Extent is one piece of a device range that lies contiguously in a file a
// client process can map (a memory region: backing.MappingSource).
type Extent struct {
	Off, Len int64 // the piece, in bytes of the device Extents was called on
	// Source holds the piece; SourceOff is where it starts, in bytes of the
	// Source device. Add the file offset of Source.MapFile to get the file
	// offset to map.
	Source    backing.MappingSource
	SourceOff int64
	// PageSize is Source's mapping granularity (4 KiB, 2 MiB on hugetlbfs).
	PageSize int64
	// Kind and Path describe Source, for messages.
	Kind backing.Kind
	Path string
	// Via lists the mapped devices the piece was resolved through, the
	// device Extents was called on first: a store to the piece is a write
	// to each of them (a snapshot of any of them must catch it).
	Via []*Device
}

// Extents resolves [off, off+n) of the live table to the files that hold
// it, in order, adjacent pieces of one file merged: what a client maps to
// see the device as one range of memory (as dm composes direct_access
// across targets). Every line in the range must be DAX-capable and a
// Remapper, and every device it reaches either a MappingSource or an
// ExtentSource.
func (d *Device) Extents(off, n int64) ([]Extent, error) {
	t, err := d.enter()
	if err != nil {
		return nil, err
	}
	defer d.exit()
	exts, err := t.extents(off, n)
	if err != nil {
		return nil, fmt.Errorf("%s: extents of %d bytes at offset %d: %w", d.Name(), n, off, err)
	}
	for i := range exts {
		exts[i].Via = append([]*Device{d}, exts[i].Via...)
	}
	return exts, nil
}

func (t *Table) extents(off, n int64) ([]Extent, error) {
	size := t.size.Bytes()
	if n <= 0 {
		return nil, fmt.Errorf("%w: range of %d bytes", ErrInvalidArgument, n)
	}
	if off < 0 || off > size || n > size-off {
		return nil, fmt.Errorf("%w: %d bytes at offset %d, device has %d bytes", ErrOutOfRange, n, off, size)
	}
	var out []Extent
	for pos := off; pos < off+n; {
		i := t.find(pos)
		l := t.lines[i]
		if !t.caps[i].caps.Has(DAX) {
			return nil, fmt.Errorf("%w: line %d (%s) is not DAX-capable: %s", ErrNotSupported, l.Line, l.Type, t.caps[i].why)
		}
		rm, ok := t.targets[i].(Remapper)
		if !ok {
			return nil, fmt.Errorf("%w: line %d (%s) cannot say which device holds its data", ErrNotSupported, l.Line, l.Type)
		}
		toff := pos - l.Start.Bytes()
		want := min(off+n-pos, l.Len.Bytes()-toff)
		ref, devOff, length, err := rm.Remap(toff, want)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", l.Line, l.Type, err)
		}
		if length <= 0 || length > want {
			return nil, fmt.Errorf("line %d (%s): remap of %d bytes at %d returned %d bytes", l.Line, l.Type, want, toff, length)
		}
		sub, err := resolve(ref, devOff, length)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", l.Line, l.Type, err)
		}
		for _, e := range sub {
			e.Off += pos
			out = appendExtent(out, e)
		}
		pos += length
	}
	return out, nil
}

// SameMemory reports whether tables a and b put every byte of the device
// in the same place of the same memory, so that a client mapping made
// under a stays right under b (snapshot-origin over /dev/mapper/X-real
// in place of X's linear table, for instance). A table with a line that
// is not memory (error, zero) is the same as none.
func SameMemory(a, b *Table) bool {
	if a.size != b.size {
		return false
	}
	ea, erra := a.extents(0, a.size.Bytes())
	eb, errb := b.extents(0, b.size.Bytes())
	if erra != nil || errb != nil {
		return false
	}
	type place struct {
		off, n int64
		src    backing.MappingSource
		srcOff int64
	}
	places := func(es []Extent) []place {
		var out []place
		for _, e := range es {
			if k := len(out) - 1; k >= 0 && out[k].src == e.Source && out[k].off+out[k].n == e.Off && out[k].srcOff+out[k].n == e.SourceOff {
				out[k].n += e.Len
				continue
			}
			out = append(out, place{e.Off, e.Len, e.Source, e.SourceOff})
		}
		return out
	}
	return slices.Equal(places(ea), places(eb))
}

// resolve turns [off, off+n) of a backing device into extents relative to
// that range's start.
func resolve(ref *DeviceRef, off, n int64) ([]Extent, error) {
	switch dev := ref.Device.(type) {
	case backing.MappingSource:
		return []Extent{{Off: 0, Len: n, Source: dev, SourceOff: off, PageSize: dev.PageSize(), Kind: ref.Kind(), Path: ref.Path()}}, nil
	case ExtentSource:
		sub, err := dev.Extents(off, n)
		if err != nil {
			return nil, err
		}
		for i := range sub {
			sub[i].Off -= off
		}
		return sub, nil
	}
	return nil, fmt.Errorf("%w: %s is a %s, not memory a client can map", ErrNotSupported, ref.Name, ref.Kind())
}

// appendExtent appends e, merging it into the last extent when it continues
// it in the same source.
func appendExtent(out []Extent, e Extent) []Extent {
	if k := len(out) - 1; k >= 0 {
		last := &out[k]
		if last.Source == e.Source && last.Off+last.Len == e.Off && last.SourceOff+last.Len == e.SourceOff && slices.Equal(last.Via, e.Via) {
			last.Len += e.Len
			return out
		}
	}
	return append(out, e)
}

// WriteGranularity returns the smallest non-zero WriteGranularity of the
// live table's lines over [off, off+n), of the mapped devices they
// remap onto (see WriteGranularizer) and of d's WriteObserver: the unit
// the direct-access fault path prepares and un-protects at once, or 0 when
// no store in the range needs catching.
func (d *Device) WriteGranularity(off, n int64) int64 {
	t, err := d.enter()
	if err != nil {
		return 0
	}
	defer d.exit()
	var g int64
	least := func(v int64) {
		if v > 0 && (g == 0 || v < g) {
			g = v
		}
	}
	least(d.observedGranularity())
	_ = t.span(off, n, func(target Target, toff, _, n int64) error {
		if wg, ok := target.(WriteGranularizer); ok {
			least(wg.WriteGranularity(toff))
		}
		return remapped(target, toff, n, func(dev backing.Device, devOff, _ int64) error {
			if wg, ok := dev.(WriteGranularizer); ok {
				least(wg.WriteGranularity(devOff))
			}
			return nil
		})
	})
	return g
}
