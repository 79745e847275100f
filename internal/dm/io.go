package dm

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// span checks [off, off+n) against the table and calls fn for each piece,
// split at target boundaries, with the piece's target-relative offset and
// its position within the request. This is the one place bounds are
// checked: targets never see I/O outside their range.
func (t *Table) span(off, n int64, fn func(target Target, toff, pos, len int64) error) error {
	size := t.size.Bytes()
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%w: %d bytes at offset %d, device has %d bytes", ErrOutOfRange, n, off, size)
	}
	for pos := int64(0); pos < n; {
		i := t.find(off + pos)
		l := t.lines[i]
		toff := off + pos - l.Start.Bytes()
		piece := min(n-pos, l.Len.Bytes()-toff)
		if err := fn(t.targets[i], toff, pos, piece); err != nil {
			return err
		}
		pos += piece
	}
	return nil
}

func (t *Table) readAt(p []byte, off int64) (int, error) {
	return t.read(p, off, false)
}

// readFileAt is readAt through the lines' files (Device.ReadFileAt).
func (t *Table) readFileAt(p []byte, off int64) (int, error) {
	return t.read(p, off, true)
}

func (t *Table) read(p []byte, off int64, file bool) (int, error) {
	done := 0
	err := t.span(off, int64(len(p)), func(target Target, toff, pos, n int64) error {
		read := target.ReadAt
		if file {
			if fr, ok := target.(backing.FileReader); ok {
				read = fr.ReadFileAt
			}
		}
		m, err := read(p[pos:pos+n], toff)
		done += m
		if err == nil && int64(m) < n {
			err = fmt.Errorf("short read: %d of %d bytes", m, n)
		}
		return err
	})
	return done, err
}

func (t *Table) writeAt(p []byte, off int64) (int, error) {
	return t.write(p, off, false)
}

// writeFileAt is writeAt through the lines' files (Device.WriteFileAt).
func (t *Table) writeFileAt(p []byte, off int64) (int, error) {
	return t.write(p, off, true)
}

func (t *Table) write(p []byte, off int64, file bool) (int, error) {
	if t.ReadOnly() {
		return 0, fmt.Errorf("%w: write of %d bytes at offset %d", ErrReadOnly, len(p), off)
	}
	done := 0
	err := t.span(off, int64(len(p)), func(target Target, toff, pos, n int64) error {
		write := target.WriteAt
		if file {
			if fw, ok := target.(backing.FileWriter); ok {
				write = fw.WriteFileAt
			}
		}
		m, err := write(p[pos:pos+n], toff)
		done += m
		if err == nil && int64(m) < n {
			err = fmt.Errorf("short write: %d of %d bytes", m, n)
		}
		return err
	})
	return done, err
}

func (t *Table) discard(off, n int64) error {
	if t.ReadOnly() {
		return fmt.Errorf("%w: discard of %d bytes at offset %d", ErrReadOnly, n, off)
	}
	return t.span(off, n, func(target Target, toff, _, n int64) error { return target.Discard(toff, n) })
}

func (t *Table) writeZeroes(off, n int64) error {
	if t.ReadOnly() {
		return fmt.Errorf("%w: write-zeroes of %d bytes at offset %d", ErrReadOnly, n, off)
	}
	return t.span(off, n, func(target Target, toff, _, n int64) error { return target.WriteZeroes(toff, n) })
}

func (t *Table) flush() error {
	var errs []error
	for i, target := range t.targets {
		if err := target.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("flush line %d (%s): %w", t.lines[i].Line, t.lines[i].Type, err))
		}
	}
	return errors.Join(errs...)
}

// directAccess returns memory for [off, off+n), limited to one target's
// range, as the kernel's dm_dax_direct_access is.
func (t *Table) directAccess(off, n int64) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: direct access of %d bytes", ErrInvalidArgument, n)
	}
	size := t.size.Bytes()
	if off < 0 || off >= size {
		return nil, fmt.Errorf("%w: direct access at offset %d, device has %d bytes", ErrOutOfRange, off, size)
	}
	i := t.find(off)
	if !t.caps[i].caps.Has(DAX) {
		return nil, fmt.Errorf("%w: line %d (%s) is not DAX-capable: %s", ErrNotSupported, t.lines[i].Line, t.lines[i].Type, t.caps[i].why)
	}
	l := t.lines[i]
	toff := off - l.Start.Bytes()
	n = min(n, l.Len.Bytes()-toff)
	return t.targets[i].(DirectAccesser).DirectAccess(toff, n)
}
