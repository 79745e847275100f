package daemon

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// mappedDevice presents a mapped device as the backing device of another
// table (/dev/mapper/NAME in a table line). It holds the device open for
// as long as it lives; its capabilities are those of the live table.
type mappedDevice struct {
	dev      *dm.Device
	id       backing.ID
	readOnly bool
	release  func() error
	closed   atomic.Bool
}

var (
	_ backing.Device         = (*mappedDevice)(nil)
	_ backing.DirectAccesser = (*mappedDevice)(nil)
	_ dm.ExtentSource        = (*mappedDevice)(nil)
	_ dm.WritePreparer       = (*mappedDevice)(nil)
	_ dm.WriteGranularizer   = (*mappedDevice)(nil)
	_ dm.MemorySource        = (*mappedDevice)(nil)
	_ dm.Renamable           = (*mappedDevice)(nil)
	_ dm.HoleFinder          = (*mappedDevice)(nil)
	_ dm.FastZeroer          = (*mappedDevice)(nil)
)

// Allocated looks at the mapped device's own allocation map.
func (m *mappedDevice) Allocated(off, n int64) (bool, int64, error) {
	runs, err := m.dev.Allocation(off, n)
	if err != nil {
		return true, 0, err
	}
	return !runs[0].Hole, runs[0].Len, nil
}

func (m *mappedDevice) FastZero() bool { return m.dev.FastZero() }

// Path is /dev/mapper/NAME with the device's name now: tables hold the
// device, not its name, so a rename carries them along.
func (m *mappedDevice) Path() string                     { return MapperPrefix + m.dev.Name() }
func (m *mappedDevice) CurrentName() string              { return m.Path() }
func (m *mappedDevice) ID() backing.ID                   { return m.id }
func (m *mappedDevice) Kind() backing.Kind               { return backing.KindMapped }
func (m *mappedDevice) Size() int64                      { return m.dev.Size() }
func (m *mappedDevice) LogicalBlockSize() int            { return dm.SectorSize }
func (m *mappedDevice) Capabilities() backing.Capability { return m.dev.Capabilities() }
func (m *mappedDevice) ReadOnly() bool                   { return m.readOnly }
func (m *mappedDevice) Flush() error                     { return m.dev.Flush() }

func (m *mappedDevice) ReadAt(p []byte, off int64) (int, error) { return m.dev.ReadAt(p, off) }

func (m *mappedDevice) WriteAt(p []byte, off int64) (int, error) {
	if err := m.writable("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	return m.dev.WriteAt(p, off)
}

func (m *mappedDevice) Discard(off, n int64) error {
	if err := m.writable("discard", off, n); err != nil {
		return err
	}
	return m.dev.Discard(off, n)
}

func (m *mappedDevice) WriteZeroes(off, n int64) error {
	if err := m.writable("write-zeroes", off, n); err != nil {
		return err
	}
	return m.dev.WriteZeroes(off, n)
}

func (m *mappedDevice) writable(op string, off, n int64) error {
	if m.readOnly {
		return fmt.Errorf("%s: %w: %s of %d bytes at offset %d", m.Path(), dm.ErrReadOnly, op, n, off)
	}
	return nil
}

// DirectAccess hands out the mapped device's memory (its live table's).
func (m *mappedDevice) DirectAccess(off, n int64) ([]byte, error) { return m.dev.DirectAccess(off, n) }

// Extents resolves a range to the files of the mapped device's live table,
// so a table over /dev/mapper/NAME can be mapped by clients too.
func (m *mappedDevice) Extents(off, n int64) ([]dm.Extent, error) { return m.dev.Extents(off, n) }

// Memory lists the memory behind a range of the mapped device, without
// waiting for it (for the cut of a table stacked on it).
func (m *mappedDevice) Memory(off, n int64) []dm.MemRange { return m.dev.Memory(off, n) }

// PrepareWrite runs the mapped device's copy-before-write for a direct
// store through a table stacked on it (a snapshot-origin below).
func (m *mappedDevice) PrepareWrite(off, n int64) error {
	if err := m.writable("prepare write", off, n); err != nil {
		return err
	}
	return m.dev.PrepareWrite(off, n)
}

// WriteGranularity is the mapped device's unit of copy-before-write at off.
func (m *mappedDevice) WriteGranularity(off int64) int64 { return m.dev.WriteGranularity(off, 1) }

// FlushRange flushes the whole device: dm has no ranged flush.
func (m *mappedDevice) FlushRange(off, n int64) error { return m.dev.Flush() }

// Close releases the device; a second Close is an error, never a second release.
func (m *mappedDevice) Close() error {
	if m.closed.Swap(true) {
		return fmt.Errorf("%s: closed twice", m.Path())
	}
	return m.release()
}

// mappedIDs gives each mapped device a stable identity for the device
// pool, so that every table naming it shares one open.
type mappedIDs struct {
	mu   sync.Mutex
	next uint64
	m    map[*dm.Device]backing.ID
}

// mappedDev is the pseudo st_dev of mapped devices: no file system has it.
const mappedDev = 0xda5_0000_0000

func (ids *mappedIDs) get(dev *dm.Device) backing.ID {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if id, ok := ids.m[dev]; ok {
		return id
	}
	if ids.m == nil {
		ids.m = make(map[*dm.Device]backing.ID)
	}
	ids.next++
	id := backing.ID{Dev: mappedDev, Ino: ids.next}
	ids.m[dev] = id
	return id
}

func (ids *mappedIDs) forget(dev *dm.Device) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	delete(ids.m, dev)
}
