package dm

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Device is a mapped device: a name, a live and an inactive table slot, a
// suspended flag, an open count and an event counter (the kernel's
// mapped_device). Block I/O goes through the live table; it waits while the
// device is suspended.
//
// Locking: ctl serialises the verbs (load, suspend, resume, clear, remove,
// message, info). io is read-held by every block I/O for its duration and
// write-held for as long as the device is suspended, so suspend drains
// in-flight I/O and holds new I/O until resume. ctl is taken before io;
// block I/O never takes ctl.
type Device struct {
	m      *Manager
	name   atomic.Pointer[string] // changed by Manager.Rename while I/O runs
	uuid   string
	number uint64 // see Number

	ctl       sync.Mutex
	inactive  *Table
	suspended bool
	mode      Mode               // of later loads
	caps      backing.Capability // fixed dax/sync capability (capability rule)
	capsFixed bool
	openCount int
	holders   map[Holder]int // who the opens are (Open counts an unnamed one)
	deferred  bool           // remove on last close
	removed   atomic.Bool    // set under ctl; read anywhere (Removed)

	// guardRelease is the SwapGuard's release when it was asked at
	// suspend, for the resume to call.
	guardRelease func()
	// endCut ends the cut of the live table's memory that suspend started
	// (see cut.go), for the resume (or removal) to call.
	endCut func()
	// suspendMem is the memory that cut covers, what Memory says while d
	// is suspended (stacked devices ask it without waiting).
	memMu      sync.Mutex
	suspendMem []MemRange

	io   sync.RWMutex
	live *Table       // written only with io write-held
	size atomic.Int64 // live table size in bytes, readable without waiting

	events eventCounter

	// observer is told of writes before they happen (observe.go).
	observer atomic.Pointer[observerBox]
	// filler restores the memory on demand (fill.go).
	filler atomic.Pointer[fillerBox]
}

// Name returns the device name.
func (d *Device) Name() string { return *d.name.Load() }

// Removed reports whether d was removed (its verbs fail with
// ErrNotFound from then on). It never waits: the OnRemove subscribers'
// layers call it under their own locks, to keep no state for a device
// that is gone.
func (d *Device) Removed() bool { return d.removed.Load() }

// UUID returns the device uuid ("" if none).
func (d *Device) UUID() string { return d.uuid }

// Load builds text into a table and puts it in the inactive slot,
// replacing any inactive table (dmsetup load). The capability rule is
// checked here: a table that would take dax or sync away is refused.
func (d *Device) Load(text string) error {
	if err := d.refuseRestoring("load"); err != nil {
		return err
	}
	t, err := buildTable(d.m.reg, d.m.pool, d.Name(), text, d.loadMode(), d, d.events.bump)
	if err != nil {
		return err
	}
	d.m.stackMu.Lock()
	defer d.m.stackMu.Unlock()
	if err := d.checkStacking(t); err != nil {
		t.Close()
		return err
	}
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.removed.Load() {
		t.Close()
		return fmt.Errorf("load %s: %w", d.Name(), ErrNotFound)
	}
	if err := d.checkCapabilities(t); err != nil {
		t.Close()
		return err
	}
	if !d.capsFixed && t.usesDevices() {
		d.caps, d.capsFixed = t.Capabilities()&(DAX|Sync), true
	}
	old := d.inactive
	d.inactive = t
	if old != nil {
		return old.Close()
	}
	return nil
}

func (d *Device) loadMode() Mode {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	return d.mode
}

// SuspendOptions mirror dmsetup suspend's flags. NoFlush is accepted for
// compatibility: daxsnap queues no I/O inside targets, so there is nothing
// to push back; in-flight I/O always completes before suspend returns.
// Like the kernel, suspend does not flush: a FLUSH is the client's to send,
// and completed writes survive a table swap either way.
type SuspendOptions struct {
	NoFlush bool
}

// Suspend stops the device: presuspend hooks, then new block I/O is held
// and in-flight I/O drains, then postsuspend hooks. Suspending a suspended
// device does nothing.
func (d *Device) Suspend(opts SuspendOptions) error {
	if err := d.refuseRestoring("suspend"); err != nil {
		return err
	}
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.removed.Load() {
		return fmt.Errorf("suspend %s: %w", d.Name(), ErrNotFound)
	}
	// With a new table already loaded (dmsetup load, then suspend, then
	// resume, as LVM does), the guard runs now, while d still serves I/O,
	// and holds until the resume; a refusal leaves d running.
	if g := d.m.swapGuard(); g != nil && !d.suspended && d.inactive != nil && d.live != nil && d.guardRelease == nil {
		release, err := g(d, d.live, d.inactive)
		if err != nil {
			return fmt.Errorf("suspend %s: %w", d.Name(), err)
		}
		d.guardRelease = release
	}
	d.suspendLocked()
	return nil
}

func (d *Device) suspendLocked() {
	if d.suspended {
		return
	}
	live := d.live // stable: only changed with ctl held
	if live != nil {
		forEach[Suspender](live, Suspender.PreSuspend)
		// Before I/O drains: a copy-before-write under way for a direct
		// store enters d, and the cut waits for it.
		mem := live.memory()
		d.memMu.Lock()
		d.suspendMem = mem
		d.memMu.Unlock()
		d.endCut = d.m.cut(mem, "suspend "+d.Name())
	}
	d.io.Lock()
	d.suspended = true
	if live != nil {
		forEach[Suspender](live, Suspender.PostSuspend)
	}
}

func forEach[I any](t *Table, fn func(I)) {
	for _, target := range t.targets {
		if x, ok := target.(I); ok {
			fn(x)
		}
	}
}

// Resume makes the inactive table live if there is one (suspending first
// if needed, as dmsetup resume does), then lets I/O flow again. Resume of a
// running device with no inactive table does nothing.
func (d *Device) Resume() error {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.removed.Load() {
		return fmt.Errorf("resume %s: %w", d.Name(), ErrNotFound)
	}
	return d.resumeLocked()
}

func (d *Device) resumeLocked() error {
	if d.inactive == nil && !d.suspended {
		return nil
	}
	if d.inactive == nil && d.live == nil {
		return fmt.Errorf("resume %s: %w: load a table first", d.Name(), ErrNoTable)
	}
	if release := d.guardRelease; release != nil {
		// Asked at suspend: whatever table was loaded since, nothing could
		// map d meanwhile.
		d.guardRelease = nil
		defer release()
	} else if g := d.m.swapGuard(); g != nil && d.inactive != nil && d.live != nil {
		release, err := g(d, d.live, d.inactive)
		if err != nil {
			return fmt.Errorf("resume %s: %w", d.Name(), err)
		}
		defer release()
	}
	d.suspendLocked()
	next := d.live
	if d.inactive != nil {
		next = d.inactive
	}
	// A snapshot becoming live: its origin's memory stands still from
	// before its PreResume until it is active, before d serves a read.
	endActivation := d.m.cut(next.activationMemory(), "activate "+d.Name())
	var err error
	forEach[Resumer](next, func(r Resumer) {
		if err == nil {
			err = r.PreResume()
		}
	})
	if err != nil {
		callEnd(endActivation)
		return fmt.Errorf("resume %s: preresume refused, device stays suspended: %w", d.Name(), err)
	}
	var old *Table
	if d.inactive != nil {
		old, d.live, d.inactive = d.live, d.inactive, nil
		d.size.Store(d.live.size.Bytes())
		if d.live.usesDevices() {
			d.caps |= d.live.Capabilities() & (DAX | Sync)
			d.capsFixed = true
		}
		// No event: the kernel's event number counts what a table and
		// the device's name do (dm_table_event), not loads and resumes.
	}
	d.suspended = false
	d.io.Unlock()
	forEach[Resumer](d.live, Resumer.Resume)
	// The held stores resolve through the live table now.
	callEnd(endActivation)
	d.endSuspendCut()
	if old != nil {
		return old.Close()
	}
	return nil
}

// Clear drops the inactive table (dmsetup clear).
func (d *Device) Clear() error {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.inactive == nil {
		return nil
	}
	t := d.inactive
	d.inactive = nil
	return t.Close()
}

// Slot names one of a device's two table slots.
type Slot int

const (
	// Live is the table that serves I/O.
	Live Slot = iota
	// Inactive is the table Load put in, waiting for a resume (dmsetup's
	// --inactive).
	Inactive
)

// Mode is whether a table, and the devices its targets open, take writes
// (dmsetup's --readonly).
type Mode int

const (
	// ReadWrite tables take writes.
	ReadWrite Mode = iota
	// ReadOnly tables refuse writes (ErrReadOnly) and open their devices
	// read-only.
	ReadOnly
)

// Table prints the table in slot as dmsetup table does.
func (d *Device) Table(slot Slot) (string, error) {
	return d.render(slot, (*Table).Text)
}

// Status prints the status of the table in slot as dmsetup status does.
func (d *Device) Status(slot Slot) (string, error) {
	return d.render(slot, (*Table).StatusText)
}

func (d *Device) render(slot Slot, fn func(*Table) string) (string, error) {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	t := d.live
	if slot == Inactive {
		t = d.inactive
	}
	if t == nil {
		return "", nil
	}
	return fn(t), nil
}

// LiveTargets calls fn with each line of the live table and the target
// built from it, in table order, while the table can be neither swapped
// nor closed: the way to ask a target for a typed value (a snapshot's
// usage) rather than parse its status text. fn must not call d's methods.
// It reports whether d has a live table.
func (d *Device) LiveTargets(fn func(TableLine, Target)) bool {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.live == nil {
		return false
	}
	for i, t := range d.live.targets {
		fn(d.live.lines[i], t)
	}
	return true
}

// Message delivers a message to the live target that covers sector.
func (d *Device) Message(sector Sector, args []string) (string, error) {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.live == nil {
		return "", fmt.Errorf("message %s: %w", d.Name(), ErrNoTable)
	}
	if len(args) == 0 {
		return "", fmt.Errorf("message %s: %w: empty message", d.Name(), ErrInvalidArgument)
	}
	if sector >= d.live.size {
		return "", fmt.Errorf("message %s: %w: sector %d is beyond the device's %d sectors", d.Name(), ErrInvalidArgument, sector, d.live.size)
	}
	i := d.live.find(sector.Bytes())
	l := d.live.lines[i]
	m, ok := d.live.targets[i].(Messager)
	if !ok {
		return "", fmt.Errorf("message %s: %w: target %s at sector %d takes no messages", d.Name(), ErrInvalidArgument, l.Type, l.Start)
	}
	reply, err := m.Message(args)
	if err != nil {
		return "", fmt.Errorf("message %s: %s: %w", d.Name(), l.Type, err)
	}
	return reply, nil
}

// Info describes a device as dmsetup info does.
type Info struct {
	Name, UUID     string
	Suspended      bool
	ReadOnly       bool
	LiveTable      bool
	InactiveTable  bool
	OpenCount      int
	EventNr        uint64
	TargetCount    int // targets in the live table
	Size           Sector
	DeferredRemove bool
	// Capabilities fixed by the capability rule (dax, sync), and what the
	// live table offers now.
	FixedCaps, LiveCaps backing.Capability
	// Number is the device's minor (its major is Major).
	Number uint64
	// ReadAhead is in sectors; 0 without a live table (see ReadAhead).
	ReadAhead uint64
}

// Info returns the device's state.
func (d *Device) Info() Info {
	in := d.info()
	in.ReadAhead = d.ReadAhead()
	return in
}

func (d *Device) info() Info {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	in := Info{Name: d.Name(), UUID: d.uuid, Suspended: d.suspended, ReadOnly: d.mode == ReadOnly,
		LiveTable: d.live != nil, InactiveTable: d.inactive != nil, OpenCount: d.openCount,
		EventNr: d.events.current(), DeferredRemove: d.deferred, FixedCaps: d.caps, Number: d.number}
	if d.live != nil {
		in.TargetCount = len(d.live.targets)
		in.Size = d.live.size
		in.LiveCaps = d.live.Capabilities()
	}
	return in
}

// Capabilities returns what the live table offers (none without one).
func (d *Device) Capabilities() backing.Capability {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.live == nil {
		return 0
	}
	return d.live.Capabilities()
}

// SetMode sets the device mode used by later loads (dmsetup --readonly).
func (d *Device) SetMode(m Mode) {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	d.mode = m
}

// Holder says who holds a device open: a kind (HolderFUSE, HolderNBD,
// HolderTable, HolderIO, or "" when the opener did not say) and a
// description of the user ("/state/fuse/vol", "unix pid 123").
type Holder struct {
	Kind, Who string
	// PID and UID are the process and user behind the holder when the
	// opener knows them (an NBD client on a unix socket); PID is 0
	// otherwise (no client is pid 0).
	PID, UID int
}

// The kinds of Holder.
const (
	HolderFUSE  = "fuse"  // an open FUSE file (a loop device, a program)
	HolderNBD   = "nbd"   // an NBD client connection
	HolderTable = "table" // the table of another device over this one
	HolderIO    = "io"    // one control API read or write, for its duration
)

// HolderCount is one holder and how many opens it has.
type HolderCount struct {
	Holder
	N int
}

// Open counts a user of the device (the open count dmsetup info shows).
func (d *Device) Open() error { return d.OpenBy(Holder{}) }

// OpenBy is Open for a named holder: Holders lists it until CloseBy.
func (d *Device) OpenBy(h Holder) error {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.removed.Load() || d.deferred {
		return fmt.Errorf("open %s: %w: removal is pending", d.Name(), ErrNotFound)
	}
	d.openCount++
	if d.holders == nil {
		d.holders = map[Holder]int{}
	}
	d.holders[h]++
	return nil
}

// Close releases one Open; the last close of a device with a deferred
// removal removes it.
func (d *Device) Close() error { return d.CloseBy(Holder{}) }

// CloseBy releases one OpenBy(h).
func (d *Device) CloseBy(h Holder) error {
	d.ctl.Lock()
	if d.openCount == 0 || d.holders[h] == 0 {
		d.ctl.Unlock()
		return fmt.Errorf("dm: close of %s by %+v, which does not hold it open", d.Name(), h)
	}
	d.openCount--
	if d.holders[h]--; d.holders[h] == 0 {
		delete(d.holders, h)
	}
	remove := d.openCount == 0 && d.deferred
	d.ctl.Unlock()
	if remove {
		return d.m.Remove(d.Name(), RemoveOptions{})
	}
	return nil
}

// Holders lists who holds the device open, sorted by kind and
// description; their counts add up to the open count.
func (d *Device) Holders() []HolderCount {
	d.ctl.Lock()
	out := make([]HolderCount, 0, len(d.holders))
	for h, n := range d.holders {
		out = append(out, HolderCount{Holder: h, N: n})
	}
	d.ctl.Unlock()
	slices.SortFunc(out, func(a, b HolderCount) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Who, b.Who))
	})
	return out
}

// destroy tears the device down; ctl must be held and the device idle.
func (d *Device) destroy() error { return closeTables(d.detach()) }

// detach takes the device out of service (removed, no table, held I/O
// let go to fail) and returns its tables, still open, for the caller to
// close; ctl must be held and the device idle.
func (d *Device) detach() []*Table {
	if !d.suspended {
		d.io.Lock()
		d.suspended = true
	}
	d.removed.Store(true)
	if d.guardRelease != nil {
		d.guardRelease()
		d.guardRelease = nil
	}
	var tables []*Table
	for _, t := range []*Table{d.live, d.inactive} {
		if t != nil {
			tables = append(tables, t)
		}
	}
	d.live, d.inactive = nil, nil
	d.size.Store(0)
	d.events.bump()
	// Let held I/O go: it finds no live table and fails.
	d.suspended = false
	d.io.Unlock()
	d.endSuspendCut()
	return tables
}

// closeTables closes the tables a detach returned.
func closeTables(tables []*Table) error {
	var errs []error
	for _, t := range tables {
		errs = append(errs, t.Close())
	}
	return errors.Join(errs...)
}

func callEnd(end func()) {
	if end != nil {
		end()
	}
}

// endSuspendCut ends the cut suspend started; ctl held, io released.
func (d *Device) endSuspendCut() {
	d.memMu.Lock()
	d.suspendMem = nil
	d.memMu.Unlock()
	callEnd(d.endCut)
	d.endCut = nil
}
