package dm

import (
	"cmp"
	"slices"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// The cut: direct stores to memory (client mappings, see internal/session)
// bypass every target, so the core stops them itself where block I/O would
// be stopped or a point-in-time image begins:
//
//   - while a device is suspended, its memory (what its live table maps,
//     through stacked devices too) takes no direct store: suspend starts a
//     cut of it before in-flight I/O drains, resume ends it once the next
//     table is live;
//   - a target that starts a point-in-time image of a device when it
//     becomes live (an ActivationCutter: a snapshot) gets a cut of that
//     device's memory from before its PreResume until after its Resume,
//     so every store that reached the memory before the cut is in the
//     image and every later one waits for the image's copy-before-write.
//
// Both go through the Manager's Cutter, keyed by the memory's identity
// (file and offsets), not by device name: every mapping of that memory is
// caught, whichever device it was made through.

// MemRange is a range of a memory file, named by the file's identity:
// bytes [Off, Off+Len) of the file ID (offsets as a client maps them,
// MapFile's offset included).
type MemRange struct {
	ID       backing.ID
	Off, Len int64
}

// Overlaps reports whether r and o share a byte.
func (r MemRange) Overlaps(o MemRange) bool {
	return r.ID == o.ID && r.Off < o.Off+o.Len && o.Off < r.Off+r.Len
}

// Memory is the memory range e lies in.
func (e Extent) Memory() MemRange {
	_, base := e.Source.MapFile()
	var id backing.ID
	if d, ok := e.Source.(backing.Device); ok {
		id = d.ID()
	}
	return MemRange{ID: id, Off: base + e.SourceOff, Len: e.Len}
}

// Cutter stops direct stores to mem: it write-protects every client
// mapping of that memory, holding the write faults, before it returns;
// end lets the held faults resolve through the tables live then (with
// their copy-before-write) and lifts the protection no table needs any
// more. why is for logs. Cuts nest: a mapping stays protected and its
// faults held while any cut of its memory lasts.
type Cutter func(mem []MemRange, why string) (end func())

// SetCutter installs c for every device of m (the daemon's session server).
func (m *Manager) SetCutter(c Cutter) {
	m.mu.Lock()
	m.cutter = c
	m.mu.Unlock()
}

func (m *Manager) cut(mem []MemRange, why string) (end func()) {
	m.mu.Lock()
	c := m.cutter
	m.mu.Unlock()
	if c == nil || len(mem) == 0 {
		return nil
	}
	return c(mem, why)
}

// ActivationCutter is implemented by targets that start a point-in-time
// image of a device when they become live (snapshot): ActivationCut
// returns the devices whose memory must stand still while they do, or
// none when the image already exists (a reload of a snapshot that is
// active). See the cut above.
type ActivationCutter interface {
	ActivationCut() []*DeviceRef
}

// MemorySource is implemented by backing devices that are mapped devices
// (/dev/mapper/NAME): Memory lists the memory behind [off, off+n) of the
// device, through the devices it stacks on, without waiting (see
// Device.Memory).
type MemorySource interface {
	Memory(off, n int64) []MemRange
}

// Memory lists the memory behind [off, off+n) of d's live table, through
// stacked devices, without waiting for a suspended device: while d is
// suspended (or being suspended) it is all the memory d's live table
// mapped at its suspend, which its suspend's cut covers. A cut of more
// than a stacked line uses is safe: it only holds more.
func (d *Device) Memory(off, n int64) []MemRange {
	if !d.io.TryRLock() {
		d.memMu.Lock()
		defer d.memMu.Unlock()
		return slices.Clone(d.suspendMem)
	}
	defer d.io.RUnlock()
	if d.live == nil {
		return nil
	}
	return d.live.memoryOf(off, n)
}

// memory lists the memory that t maps (lines that are not memory, such as
// error, zero or a regular file, have none).
func (t *Table) memory() []MemRange { return t.memoryOf(0, t.size.Bytes()) }

// memoryOf lists the memory behind [off, off+n) of t, merged per file.
func (t *Table) memoryOf(off, n int64) []MemRange {
	var out []MemRange
	_ = t.span(off, n, func(target Target, toff, _, n int64) error {
		return remapped(target, toff, n, func(dev backing.Device, devOff, n int64) error {
			out = append(out, devMemory(dev, devOff, n)...)
			return nil
		})
	})
	return mergeMemory(out)
}

// devMemory is the memory behind [off, off+n) of a backing device.
func devMemory(dev backing.Device, off, n int64) []MemRange {
	switch d := dev.(type) {
	case backing.MappingSource:
		_, base := d.MapFile()
		return []MemRange{{ID: dev.ID(), Off: base + off, Len: n}}
	case MemorySource:
		return d.Memory(off, n)
	}
	return nil
}

// mergeMemory sorts ranges and merges those of one file that overlap or
// touch (a striped table's chunks of one file become one range).
func mergeMemory(rs []MemRange) []MemRange {
	slices.SortFunc(rs, func(a, b MemRange) int {
		if c := cmp.Compare(a.ID.Dev, b.ID.Dev); c != 0 {
			return c
		}
		if c := cmp.Compare(a.ID.Ino, b.ID.Ino); c != 0 {
			return c
		}
		return cmp.Compare(a.Off, b.Off)
	})
	var out []MemRange
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && out[k].ID == r.ID && r.Off <= out[k].Off+out[k].Len {
			out[k].Len = max(out[k].Len, r.Off+r.Len-out[k].Off)
			continue
		}
		out = append(out, r)
	}
	return out
}

// refMemory lists the memory behind the range of ref a target uses (its
// whole device when it gave no length), or none if it is not memory.
func refMemory(ref *DeviceRef) []MemRange {
	off, n := ref.Start.Bytes(), ref.Len.Bytes()
	if n == 0 {
		n = ref.Size() - off
	}
	if n <= 0 {
		return nil
	}
	return devMemory(ref.Device, off, n)
}

// activationMemory lists the memory the ActivationCutters of t need cut.
func (t *Table) activationMemory() []MemRange {
	var out []MemRange
	for _, target := range t.targets {
		if ac, ok := target.(ActivationCutter); ok {
			for _, ref := range ac.ActivationCut() {
				out = append(out, refMemory(ref)...)
			}
		}
	}
	return mergeMemory(out)
}
