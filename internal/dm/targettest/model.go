package targettest

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// Model is the reference behaviour of a target (or a whole table) over
// plain byte slices, one per backing device of the Case. Offsets are bytes
// relative to the start of the target. A method returns the error the
// target must fail with (the target's error must wrap it), or nil.
type Model interface {
	// ReadAt fills p with what the target must read at off.
	ReadAt(p []byte, off int64) error
	WriteAt(p []byte, off int64) error
	Discard(off, n int64) error
	WriteZeroes(off, n int64) error
	// Flush returns the indexes of the devices a flush must reach.
	Flush() (devices []int, err error)
	// DirectAccess returns how many bytes from off a direct access of n
	// bytes hands out; dm.ErrNotSupported if the target has none.
	DirectAccess(off, n int64) (int64, error)
}

// ModelFunc builds a model over devs, the model's images of the Case's
// devices in order, initially equal to their contents; the model updates
// them as it goes and the suite compares them with the real devices.
type ModelFunc func(devs [][]byte) Model

// mapped models a target that maps every byte to one byte of a device;
// it works a byte at a time so that it shares no range arithmetic with the
// targets it checks.
type mapped struct {
	devs  [][]byte
	loc   func(off int64) (dev int, devOff int64)
	flush []int
	da    func(off, n int64) int64
}

func (m *mapped) ReadAt(p []byte, off int64) error {
	for i := range p {
		d, o := m.loc(off + int64(i))
		p[i] = m.devs[d][o]
	}
	return nil
}

func (m *mapped) WriteAt(p []byte, off int64) error {
	for i, b := range p {
		d, o := m.loc(off + int64(i))
		m.devs[d][o] = b
	}
	return nil
}

// Discard zeroes: every backing device reads discarded ranges as zeroes.
func (m *mapped) Discard(off, n int64) error { return m.WriteZeroes(off, n) }

func (m *mapped) WriteZeroes(off, n int64) error {
	for i := int64(0); i < n; i++ {
		d, o := m.loc(off + i)
		m.devs[d][o] = 0
	}
	return nil
}

func (m *mapped) Flush() ([]int, error)                    { return m.flush, nil }
func (m *mapped) DirectAccess(off, n int64) (int64, error) { return m.da(off, n), nil }

// LinearModel models `linear <dev> <offset>` with dev the index of the
// Case device.
func LinearModel(dev int, offset dm.Sector) ModelFunc {
	return func(devs [][]byte) Model {
		return &mapped{
			devs:  devs,
			loc:   func(off int64) (int, int64) { return dev, offset.Bytes() + off },
			flush: []int{dev},
			da:    func(_, n int64) int64 { return n },
		}
	}
}

// Stripe is one `<dev> <offset>` pair of a striped model.
type Stripe struct {
	Dev    int // index of the Case device
	Offset dm.Sector
}

// StripedModel models `striped <len(stripes)> <chunk> <dev> <offset>...`.
func StripedModel(chunk dm.Sector, stripes ...Stripe) ModelFunc {
	c := chunk.Bytes()
	n := int64(len(stripes))
	return func(devs [][]byte) Model {
		var flush []int
		for _, s := range stripes {
			flush = append(flush, s.Dev)
		}
		return &mapped{
			devs: devs,
			loc: func(off int64) (int, int64) {
				global := off / c // chunk number in the target
				s := stripes[global%n]
				return s.Dev, s.Offset.Bytes() + (global/n)*c + off%c
			},
			flush: flush,
			da:    func(off, n int64) int64 { return min(n, c-off%c) },
		}
	}
}

// ZeroModel models `zero`: reads zeroes, drops writes, has no direct access.
func ZeroModel() ModelFunc { return func([][]byte) Model { return zeroModel{} } }

type zeroModel struct{}

func (zeroModel) ReadAt(p []byte, _ int64) error         { clear(p); return nil }
func (zeroModel) WriteAt([]byte, int64) error            { return nil }
func (zeroModel) Discard(_, _ int64) error               { return nil }
func (zeroModel) WriteZeroes(_, _ int64) error           { return nil }
func (zeroModel) Flush() ([]int, error)                  { return nil, nil }
func (zeroModel) DirectAccess(_, _ int64) (int64, error) { return 0, dm.ErrNotSupported }

// ErrorModel models `error`: all I/O and direct access fail with dm.ErrIO;
// flush succeeds, as the kernel sends the error target no flush.
func ErrorModel() ModelFunc { return func([][]byte) Model { return errorModel{} } }

type errorModel struct{}

func (errorModel) ReadAt([]byte, int64) error             { return dm.ErrIO }
func (errorModel) WriteAt([]byte, int64) error            { return dm.ErrIO }
func (errorModel) Discard(_, _ int64) error               { return dm.ErrIO }
func (errorModel) WriteZeroes(_, _ int64) error           { return dm.ErrIO }
func (errorModel) Flush() ([]int, error)                  { return nil, nil }
func (errorModel) DirectAccess(_, _ int64) (int64, error) { return 0, dm.ErrIO }

// Line is one line of a table model.
type Line struct {
	Len   dm.Sector
	Model ModelFunc
}

// TableModel models a mapped device made of lines laid end to end, as the
// dm core runs them: I/O split at line boundaries and issued in order,
// stopping at the first piece that fails; flush sent to every line; direct
// access limited to the line that holds the offset.
func TableModel(lines ...Line) ModelFunc {
	return func(devs [][]byte) Model {
		t := &tableModel{}
		var start int64
		for _, l := range lines {
			t.lines = append(t.lines, lineModel{start: start, len: l.Len.Bytes(), m: l.Model(devs)})
			start += l.Len.Bytes()
		}
		return t
	}
}

type tableModel struct{ lines []lineModel }

type lineModel struct {
	start, len int64
	m          Model
}

// span calls fn for each piece of [off, off+n) within one line, in order.
func (t *tableModel) span(off, n int64, fn func(l lineModel, loff, pos, n int64) error) error {
	for _, l := range t.lines {
		lo, hi := max(off, l.start), min(off+n, l.start+l.len)
		if lo >= hi {
			continue
		}
		if err := fn(l, lo-l.start, lo-off, hi-lo); err != nil {
			return err
		}
	}
	return nil
}

func (t *tableModel) ReadAt(p []byte, off int64) error {
	return t.span(off, int64(len(p)), func(l lineModel, loff, pos, n int64) error { return l.m.ReadAt(p[pos:pos+n], loff) })
}

func (t *tableModel) WriteAt(p []byte, off int64) error {
	return t.span(off, int64(len(p)), func(l lineModel, loff, pos, n int64) error { return l.m.WriteAt(p[pos:pos+n], loff) })
}

func (t *tableModel) Discard(off, n int64) error {
	return t.span(off, n, func(l lineModel, loff, _, n int64) error { return l.m.Discard(loff, n) })
}

func (t *tableModel) WriteZeroes(off, n int64) error {
	return t.span(off, n, func(l lineModel, loff, _, n int64) error { return l.m.WriteZeroes(loff, n) })
}

func (t *tableModel) Flush() ([]int, error) {
	var devs []int
	var errs []error
	for _, l := range t.lines {
		d, err := l.m.Flush()
		devs = append(devs, d...)
		errs = append(errs, err)
	}
	return devs, errors.Join(errs...)
}

func (t *tableModel) DirectAccess(off, n int64) (int64, error) {
	for _, l := range t.lines {
		if off >= l.start && off < l.start+l.len {
			return l.m.DirectAccess(off-l.start, min(n, l.start+l.len-off))
		}
	}
	return 0, fmt.Errorf("%w: offset %d beyond the table model", dm.ErrOutOfRange, off)
}
