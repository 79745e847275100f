// Package backingtest provides backing devices for tests: Mem, a plain
// in-memory device whose bytes the test can inspect as a reference.
package backingtest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/backing"
)

var nextIno atomic.Uint64

// Mem is an in-memory backing.Device. It is DAX-capable when Caps says so
// (DirectAccess returns the slice itself), so tests can model memory media.
type Mem struct {
	mu   sync.RWMutex
	name string
	id   backing.ID
	data []byte
	caps backing.Capability
	ro   bool
	// Flushes counts Flush and FlushRange calls; Closes counts Close calls.
	// Close does not disable the device: a pool may open it again.
	Flushes, Closes atomic.Int64
}

// NewMem returns a zeroed device of size bytes with the given capabilities.
func NewMem(name string, size int64, caps backing.Capability) *Mem {
	return &Mem{name: name, id: backing.ID{Dev: 0xfffe, Ino: nextIno.Add(1)}, data: make([]byte, size), caps: caps}
}

// SetReadOnly makes the device refuse writes.
func (m *Mem) SetReadOnly(ro bool) { m.ro = ro }

// Bytes returns the device's contents (shared, not a copy).
func (m *Mem) Bytes() []byte { return m.data }

func (m *Mem) Path() string                     { return m.name }
func (m *Mem) ID() backing.ID                   { return m.id }
func (m *Mem) Kind() backing.Kind               { return m.kind() }
func (m *Mem) Size() int64                      { return int64(len(m.data)) }
func (m *Mem) LogicalBlockSize() int            { return 512 }
func (m *Mem) Capabilities() backing.Capability { return m.caps }
func (m *Mem) ReadOnly() bool                   { return m.ro }
func (m *Mem) Flush() error                     { m.Flushes.Add(1); return m.check() }
func (m *Mem) FlushRange(off, n int64) error    { m.Flushes.Add(1); return m.span(off, n) }
func (m *Mem) Discard(off, n int64) error       { return m.WriteZeroes(off, n) }
func (m *Mem) Close() error                     { m.Closes.Add(1); return nil }

func (m *Mem) kind() backing.Kind {
	if m.caps.Has(backing.DAX) {
		return backing.KindTmpfs
	}
	return backing.KindFile
}

func (m *Mem) check() error { return nil }

func (m *Mem) span(off, n int64) error {
	if err := m.check(); err != nil {
		return err
	}
	if off < 0 || n < 0 || off > int64(len(m.data)) || n > int64(len(m.data))-off { // no off+n: it can overflow
		return fmt.Errorf("backingtest: %s: range %d+%d outside device of %d bytes", m.name, off, n, len(m.data))
	}
	return nil
}

func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	if err := m.span(off, int64(len(p))); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return copy(p, m.data[off:]), nil
}

func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	if m.ro {
		return 0, fmt.Errorf("backingtest: %s is read-only: %w", m.name, syscall.EROFS)
	}
	if err := m.span(off, int64(len(p))); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.data[off:], p), nil
}

func (m *Mem) WriteZeroes(off, n int64) error {
	if m.ro {
		return fmt.Errorf("backingtest: %s is read-only: %w", m.name, syscall.EROFS)
	}
	if err := m.span(off, n); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}

// DirectAccess returns the device's memory; it fails unless Caps has DAX.
func (m *Mem) DirectAccess(off, n int64) ([]byte, error) {
	if !m.caps.Has(backing.DAX) {
		return nil, fmt.Errorf("backingtest: %s is not DAX-capable", m.name)
	}
	if err := m.span(off, n); err != nil {
		return nil, err
	}
	return m.data[off : off+n : off+n], nil
}

var (
	_ backing.Device         = (*Mem)(nil)
	_ backing.DirectAccesser = (*Mem)(nil)
)

// Opener returns a DevicePool opener that resolves names to the given
// devices, and fails for any other name like a missing file would.
func Opener(devs ...*Mem) func(name string, opts backing.Options) (backing.Device, error) {
	byName := make(map[string]*Mem, len(devs))
	for _, d := range devs {
		byName[d.name] = d
	}
	return func(name string, _ backing.Options) (backing.Device, error) {
		d, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("open %s: no such file or directory", name)
		}
		return d, nil
	}
}
