package dm

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Table is a constructed table: every line's target built and its devices
// open. It is immutable once built; a device swaps whole tables.
type Table struct {
	lines   []TableLine
	targets []Target
	ctxs    []*CtorContext
	caps    []lineCaps
	size    Sector
	mode    Mode
}

// lineCaps is what one line offers and, for each capability it lacks, why.
type lineCaps struct {
	caps backing.Capability
	why  string
}

// BuildTable parses text and constructs every target (the kernel's table
// load: all constructors run now). On error nothing stays open.
func BuildTable(reg *Registry, pool *DevicePool, device, text string, mode Mode) (*Table, error) {
	return buildTable(reg, pool, device, text, mode, nil, nil)
}

// buildTable is BuildTable for a table of owner (nil: of no device), with
// the hook targets call to signal a device event (a snapshot invalidated,
// a merge finished).
func buildTable(reg *Registry, pool *DevicePool, device, text string, mode Mode, owner *Device, event func()) (*Table, error) {
	lines, err := ParseTable(text)
	if err != nil {
		return nil, withDevice(err, device)
	}
	t := &Table{lines: lines, mode: mode}
	for _, l := range lines {
		if err := t.add(reg, pool, device, l, owner, event); err != nil {
			t.Close()
			return nil, withDevice(err, device)
		}
	}
	t.size = lines[len(lines)-1].Start + lines[len(lines)-1].Len
	return t, nil
}

func withDevice(err error, device string) error {
	var te *TableError
	if errors.As(err, &te) && te.Device == "" {
		te.Device = device
	}
	return err
}

func (t *Table) add(reg *Registry, pool *DevicePool, device string, l TableLine, owner *Device, event func()) error {
	tt, ok := reg.Lookup(l.Type)
	if !ok {
		return &TableError{Line: l.Line, Target: l.Type, Err: ErrUnknownTarget,
			Reason: fmt.Sprintf("unknown target type %q", l.Type),
			Hint:   "known types: " + strings.Join(reg.Names(), ", ")}
	}
	ctx := NewCtorContext(pool, device, l.Start, l.Len, t.mode)
	ctx.event, ctx.owner = event, owner
	target, err := tt.New(ctx, l.Args)
	if err != nil {
		ctx.Release()
		te := &TableError{Line: l.Line, Target: l.Type, Reason: err.Error()}
		// A mapped device it could not open says which: a restore waits
		// for it (see StackError).
		if se := (*StackError)(nil); errors.As(err, &se) {
			te.Err = se
		} else if ctx.stackErr != nil {
			te.Err = ctx.stackErr
		}
		return te
	}
	t.targets = append(t.targets, target)
	t.ctxs = append(t.ctxs, ctx)
	t.caps = append(t.caps, deriveCaps(l.Type, target, ctx.Devices()))
	return nil
}

// deriveCaps applies the kernel's rule (dm-table.c device_not_dax_capable):
// a line is DAX-capable iff its target has direct access and every device
// it uses is DAX-capable; a target with no device (error) counts as capable.
func deriveCaps(typ string, target Target, devs []*DeviceRef) lineCaps {
	if _, ok := target.(DirectAccesser); !ok {
		return lineCaps{why: fmt.Sprintf("target %s has no direct access", typ)}
	}
	lc := lineCaps{caps: DAX | Sync | WPFault}
	for _, d := range devs {
		have := d.Capabilities()
		if lc.why == "" && have&(DAX|Sync) != DAX|Sync {
			lc.why = fmt.Sprintf("%s is a %s (capabilities: %s)", d.Name, d.Kind(), have)
		}
		lc.caps &= have
	}
	if c, ok := target.(Capabler); ok {
		caps, why := c.Capabilities(lc.caps)
		if caps != lc.caps && why != "" {
			lc.why = why
		}
		lc.caps = caps
	}
	return lc
}

// Capability is backing.Capability, re-exported for callers of dm.
type Capability = backing.Capability

// Capability bits, re-exported for callers of dm.
const (
	DAX     = backing.DAX
	Sync    = backing.Sync
	WPFault = backing.WPFault
)

// Capabilities is what every line of the table offers.
func (t *Table) Capabilities() backing.Capability {
	c := DAX | Sync | WPFault
	for _, lc := range t.caps {
		c &= lc.caps
	}
	return c
}

// lacking returns the first line that lacks want, and why.
func (t *Table) lacking(want backing.Capability) (TableLine, string, bool) {
	for i, lc := range t.caps {
		if !lc.caps.Has(want) {
			return t.lines[i], lc.why, true
		}
	}
	return TableLine{}, "", false
}

// usesDevices reports whether any line opened a device. A table without
// (all `error`) says nothing about what the device is, so it fixes no
// capability: like the kernel, it inherits whatever the device had.
func (t *Table) usesDevices() bool {
	for _, c := range t.ctxs {
		if len(c.Devices()) > 0 {
			return true
		}
	}
	return false
}

// Size is the table's length in sectors.
func (t *Table) Size() Sector { return t.size }

// Lines returns the parsed lines (callers must not modify them).
func (t *Table) Lines() []TableLine { return t.lines }

// ReadOnly reports whether the table was loaded read-only.
func (t *Table) ReadOnly() bool { return t.mode == ReadOnly }

// Targets returns the constructed targets in line order.
func (t *Table) Targets() []Target { return t.targets }

// Devices lists every backing device the table uses, once each.
func (t *Table) Devices() []*DeviceRef {
	var out []*DeviceRef
	seen := map[backing.Device]bool{}
	for _, c := range t.ctxs {
		for _, d := range c.Devices() {
			if !seen[d.Device] {
				seen[d.Device] = true
				out = append(out, d)
			}
		}
	}
	return out
}

// Text prints the table as `dmsetup table` does: each line's start, length
// and type, a space, and the target's table arguments.
func (t *Table) Text() string { return t.render(StatusTable) }

// StatusText prints `dmsetup status` lines.
func (t *Table) StatusText() string { return t.render(StatusInfo) }

func (t *Table) render(kind StatusType) string {
	var b strings.Builder
	for i, l := range t.lines {
		fmt.Fprintf(&b, "%d %d %s %s\n", l.Start, l.Len, l.Type, t.targets[i].Status(kind))
	}
	return b.String()
}

// find returns the index of the target holding byte offset off.
func (t *Table) find(off int64) int {
	s := Sector(off / SectorSize)
	return sort.Search(len(t.lines), func(i int) bool { return t.lines[i].Start+t.lines[i].Len > s })
}

// Close destroys every target and releases its devices.
func (t *Table) Close() error {
	var errs []error
	for i, target := range t.targets {
		if err := target.Close(); err != nil {
			errs = append(errs, fmt.Errorf("line %d (%s): %w", t.lines[i].Line, t.lines[i].Type, err))
		}
		t.ctxs[i].Release()
	}
	t.targets, t.ctxs = nil, nil
	return errors.Join(errs...)
}
