package dm

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Stacking: a table line may name another mapped device of the same
// Manager as its backing device, by name (/dev/mapper/NAME) or by number
// (/dev/dm-N, the kernel's node name). The constructor's OpenDevice opens
// it as the kernel's dm_get_device does: the table holds the device itself,
// not its name, and the device counts the table as an open (HolderTable)
// until the table is closed. Which devices a device stacks on is what its
// tables opened (Below, the kernel's iterate_devices and `dmsetup deps`),
// never what their text says; a load that would make a device sit under
// itself is refused.

// MapperPrefix is how a table names another mapped device: /dev/mapper/NAME.
const MapperPrefix = "/dev/mapper/"

// NodePrefix is how a table names a mapped device by number: /dev/dm-N.
const NodePrefix = "/dev/dm-"

// StackedDev is the pseudo st_dev of the backing.ID of a mapped device
// opened as a backing device (its Ino is the device number): no file
// system has it, so the device pool shares one open per mapped device.
const StackedDev = 0xda5_0000_0000

// IsStackRef reports whether a table argument names a mapped device.
func IsStackRef(ref string) bool {
	return strings.HasPrefix(ref, MapperPrefix) || strings.HasPrefix(ref, NodePrefix)
}

// Number is the device's number, minted by its Manager when the device was
// created and never shared with another device of the Manager while it
// lives: the kernel's minor, the lowest free one unless asked for
// (CreateOptions.Persistent), so a removed device's number is given again.
// Tables that stack on the device hold it by this identity; a rename does
// not change it.
func (d *Device) Number() uint64 { return d.number }

// Major is the major number daxsnap's devices report (dmsetup info's
// "Major, minor", ls's "(254:0)"): the device mapper's is dynamic, and 254
// is what the kernel gives it on most machines (the first dynamic major).
// Their minor is their Number.
const Major = 254

// MaxMinor is the largest device number (the kernel's MINORMASK, 20 bits).
const MaxMinor = 1<<20 - 1

// StackError says why a table line could not open a mapped device.
type StackError struct {
	Ref     string // as the line wrote it
	Name    string // the device's name, if it exists
	NoTable bool   // the device exists but has no live table (yet)
	Err     error  // ErrNotFound, or why the open was refused
}

func (e *StackError) Error() string {
	switch {
	case e.Name == "":
		return fmt.Sprintf("%s: no such mapped device: create it first (`daxsnap ls` lists them)", e.Ref)
	case e.NoTable:
		return fmt.Sprintf("%s has no live table: load one and resume it first", e.Ref)
	}
	return fmt.Sprintf("%s: %v", e.Ref, e.Err)
}

// Unwrap: a line that cannot open its device makes an invalid table.
func (e *StackError) Unwrap() error { return ErrInvalidTable }

// lookup finds the device a stack reference names.
func (m *Manager) lookup(ref string) (*Device, bool) {
	if name, ok := strings.CutPrefix(ref, MapperPrefix); ok {
		d, err := m.Get(name)
		return d, err == nil
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(ref, NodePrefix), 10, 64)
	if err != nil {
		return nil, false
	}
	d, err := m.GetByNumber(n)
	return d, err == nil
}

// Open opens the mapped device ref names (/dev/mapper/NAME or /dev/dm-N)
// as a backing device, as a table's constructor does: it counts as an open
// by a table (HolderTable) until Close, reads and writes go through the
// device's live table, and its capabilities are that table's. The device
// pool calls it for table lines; tests and tools may call it directly.
func (m *Manager) Open(ref string, opts backing.Options) (backing.Device, error) {
	d, ok := m.lookup(ref)
	if !ok {
		return nil, &StackError{Ref: ref, Err: ErrNotFound}
	}
	in := d.info()
	if !in.LiveTable {
		return nil, &StackError{Ref: ref, Name: in.Name, NoTable: true, Err: ErrNoTable}
	}
	if err := d.OpenBy(Holder{Kind: HolderTable}); err != nil {
		return nil, &StackError{Ref: ref, Name: in.Name, Err: err}
	}
	return &stacked{dev: d, readOnly: opts.ReadOnly || in.ReadOnly}, nil
}

// Below lists the mapped devices d's live and inactive tables opened, in
// table order, each once (dmsetup deps).
func (d *Device) Below() []*Device {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	var out []*Device
	for _, t := range []*Table{d.live, d.inactive} {
		if t == nil {
			continue
		}
		for _, low := range t.stackedOn() {
			if !slices.Contains(out, low) {
				out = append(out, low)
			}
		}
	}
	return out
}

// stackedOn lists the mapped devices t's lines opened.
func (t *Table) stackedOn() []*Device {
	var out []*Device
	for _, ref := range t.Devices() {
		if s, ok := ref.Device.(*stacked); ok {
			out = append(out, s.dev)
		}
	}
	return out
}

// Above lists, sorted by name, the devices of m whose tables opened d
// (the kernel's holders directory of d).
func (m *Manager) Above(d *Device) []*Device {
	var out []*Device
	for _, up := range m.List() {
		if slices.Contains(up.Below(), d) {
			out = append(out, up)
		}
	}
	return out
}

// Over lists, sorted by name, every device of m stacked on d directly or
// through other devices: what stops working, or must let go first, when d
// does.
func (m *Manager) Over(d *Device) []*Device {
	below := m.graph()
	var out []*Device
	for _, up := range m.List() {
		if up != d && reaches(below, up, d) {
			out = append(out, up)
		}
	}
	return out
}

// StackOrder lists every device of m after the devices it stacks on, ties
// by name: the order to bring devices up in (reversed, to take them down).
func (m *Manager) StackOrder() []*Device {
	devs := m.List()
	below := m.graph()
	done := make(map[*Device]bool, len(devs))
	out := make([]*Device, 0, len(devs))
	for progress := true; progress; {
		progress = false
		for _, d := range devs {
			if !done[d] && allDone(below[d], done, below) {
				done[d], progress = true, true
				out = append(out, d)
			}
		}
	}
	for _, d := range devs { // caught in a cycle, which loads never allow
		if !done[d] {
			out = append(out, d)
		}
	}
	return out
}

func allDone(deps []*Device, done map[*Device]bool, known map[*Device][]*Device) bool {
	for _, d := range deps {
		if _, ok := known[d]; ok && !done[d] {
			return false
		}
	}
	return true
}

// graph maps every device of m to the devices below it.
func (m *Manager) graph() map[*Device][]*Device {
	g := map[*Device][]*Device{}
	for _, d := range m.List() {
		g[d] = d.Below()
	}
	return g
}

// reaches reports whether from stacks on to, directly or not; below
// gives the edges (nil: ask the devices).
func reaches(below map[*Device][]*Device, from, to *Device) bool {
	seen := map[*Device]bool{}
	stack := []*Device{from}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if d == to {
			return true
		}
		if seen[d] {
			continue
		}
		seen[d] = true
		if below != nil {
			stack = append(stack, below[d]...)
		} else {
			stack = append(stack, d.Below()...)
		}
	}
	return false
}

// checkStacking refuses a table t for d that opened d itself, or a device
// that stacks on d: block I/O would loop. m.stackMu must be held until t
// is in place, so that two loads cannot close a loop between them.
func (d *Device) checkStacking(t *Table) error {
	for _, low := range t.stackedOn() {
		if low == d {
			return &TableError{Device: d.Name(), Reason: fmt.Sprintf("the table maps %s%s, the device itself", MapperPrefix, low.Name()),
				Hint: "map another device"}
		}
		if reaches(nil, low, d) {
			return &TableError{Device: d.Name(), Reason: fmt.Sprintf("the table maps %s%s, whose own tables map %s: a device cannot sit under itself", MapperPrefix, low.Name(), d.Name()),
				Hint: "map another device"}
		}
	}
	return nil
}

// stacked is a mapped device opened as the backing device of a table.
type stacked struct {
	dev      *Device
	readOnly bool
	closed   atomic.Bool
}

var (
	_ backing.Device         = (*stacked)(nil)
	_ backing.DirectAccesser = (*stacked)(nil)
	_ ExtentSource           = (*stacked)(nil)
	_ WritePreparer          = (*stacked)(nil)
	_ WriteGranularizer      = (*stacked)(nil)
	_ MemorySource           = (*stacked)(nil)
	_ HoleFinder             = (*stacked)(nil)
	_ FastZeroer             = (*stacked)(nil)
	_ backing.FileReader     = (*stacked)(nil)
	_ backing.FileWriter     = (*stacked)(nil)
)

// Path is /dev/mapper/NAME with the device's name now: a table holds the
// device, not its name, so a rename carries it along.
func (s *stacked) Path() string                     { return MapperPrefix + s.dev.Name() }
func (s *stacked) ID() backing.ID                   { return backing.ID{Dev: StackedDev, Ino: s.dev.number} }
func (s *stacked) Kind() backing.Kind               { return backing.KindMapped }
func (s *stacked) Size() int64                      { return s.dev.Size() }
func (s *stacked) LogicalBlockSize() int            { return SectorSize }
func (s *stacked) Capabilities() backing.Capability { return s.dev.Capabilities() }
func (s *stacked) ReadOnly() bool                   { return s.readOnly }
func (s *stacked) FastZero() bool                   { return s.dev.FastZero() }

// Memory lists the memory behind a range of the device, without waiting
// for it (for the cut of a table stacked on it).
func (s *stacked) Memory(off, n int64) []MemRange { return s.dev.Memory(off, n) }

// WriteGranularity is the device's unit of copy-before-write at off.
func (s *stacked) WriteGranularity(off int64) int64 { return s.dev.WriteGranularity(off, 1) }

// opKind says whether an operation on a stacked device changes its data.
type opKind int

const (
	readOp  opKind = iota // allowed on a read-only open
	writeOp               // refused on a read-only open
)

// check fails op once s is closed, and a change of a read-only open.
func (s *stacked) check(op string, kind opKind, off, n int64) error {
	if s.closed.Load() {
		return fmt.Errorf("%s of %s: %w", op, s.Path(), backing.ErrClosed)
	}
	if kind == writeOp && s.readOnly {
		return fmt.Errorf("%s is opened read-only: %w (%w): %s of %d bytes at offset %d", s.Path(), ErrReadOnly, syscall.EROFS, op, n, off)
	}
	return nil
}

// inRange refuses a range beyond the device, as block I/O does.
func (s *stacked) inRange(op string, off, n int64) error {
	if size := s.Size(); off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%s of %s: %w: %d bytes at offset %d, device has %d bytes", op, s.Path(), ErrOutOfRange, n, off, size)
	}
	return nil
}

func (s *stacked) ReadAt(p []byte, off int64) (int, error) {
	if err := s.check("read", readOp, off, int64(len(p))); err != nil {
		return 0, err
	}
	return s.dev.ReadAt(p, off)
}

func (s *stacked) WriteAt(p []byte, off int64) (int, error) {
	if err := s.check("write", writeOp, off, int64(len(p))); err != nil {
		return 0, err
	}
	return s.dev.WriteAt(p, off)
}

// ReadFileAt and WriteFileAt are ReadAt and WriteAt through the files
// of the device's memory (Device.ReadFileAt, WriteFileAt).
func (s *stacked) ReadFileAt(p []byte, off int64) (int, error) {
	if err := s.check("read", readOp, off, int64(len(p))); err != nil {
		return 0, err
	}
	return s.dev.ReadFileAt(p, off)
}

func (s *stacked) WriteFileAt(p []byte, off int64) (int, error) {
	if err := s.check("write", writeOp, off, int64(len(p))); err != nil {
		return 0, err
	}
	return s.dev.WriteFileAt(p, off)
}

func (s *stacked) Discard(off, n int64) error {
	if err := s.check("discard", writeOp, off, n); err != nil {
		return err
	}
	return s.dev.Discard(off, n)
}

func (s *stacked) WriteZeroes(off, n int64) error {
	if err := s.check("write-zeroes", writeOp, off, n); err != nil {
		return err
	}
	return s.dev.WriteZeroes(off, n)
}

func (s *stacked) Flush() error {
	if err := s.check("flush", readOp, 0, 0); err != nil {
		return err
	}
	return s.dev.Flush()
}

// FlushRange flushes the whole device: dm has no ranged flush.
func (s *stacked) FlushRange(off, n int64) error {
	if err := s.check("flush", readOp, off, n); err != nil {
		return err
	}
	if err := s.inRange("flush", off, n); err != nil {
		return err
	}
	return s.dev.Flush()
}

// DirectAccess hands out the device's memory (its live table's). Like
// Device.DirectAccess, it may return fewer bytes than asked, up to the
// end of a table line: each line has memory of its own.
func (s *stacked) DirectAccess(off, n int64) ([]byte, error) {
	if err := s.check("direct access", readOp, off, n); err != nil {
		return nil, err
	}
	if err := s.inRange("direct access", off, n); err != nil {
		return nil, err
	}
	if n == 0 {
		return []byte{}, nil
	}
	return s.dev.DirectAccess(off, n)
}

// Allocated looks at the device's own allocation map.
func (s *stacked) Allocated(off, n int64) (bool, int64, error) {
	if err := s.check("allocation", readOp, off, n); err != nil {
		return true, 0, err
	}
	runs, err := s.dev.Allocation(off, n)
	if err != nil {
		return true, 0, err
	}
	return !runs[0].Hole, runs[0].Len, nil
}

// Extents resolves a range to the files of the device's live table, so a
// table over /dev/mapper/NAME can be mapped by clients too.
func (s *stacked) Extents(off, n int64) ([]Extent, error) {
	if err := s.check("extents", readOp, off, n); err != nil {
		return nil, err
	}
	return s.dev.Extents(off, n)
}

// PrepareWrite runs the device's copy-before-write for a direct store
// through a table stacked on it (a snapshot-origin below).
func (s *stacked) PrepareWrite(off, n int64) error {
	if err := s.check("prepare write", writeOp, off, n); err != nil {
		return err
	}
	return s.dev.PrepareWrite(off, n)
}

// Close releases the table's open of the device; a second Close is an
// error, never a second release.
func (s *stacked) Close() error {
	if s.closed.Swap(true) {
		return fmt.Errorf("close %s: %w", s.Path(), backing.ErrClosed)
	}
	return s.dev.CloseBy(Holder{Kind: HolderTable})
}
