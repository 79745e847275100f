package dm

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Manager holds the mapped devices by name (the kernel's name and uuid
// hash) and builds their tables from a registry of target types and a pool
// of backing devices.
type Manager struct {
	reg  *Registry
	pool *DevicePool

	mu       sync.Mutex
	devs     map[string]*Device
	guard    SwapGuard
	cutter   Cutter
	onRemove []*func(*Device) // OnRemove's subscribers, in order

	// stackMu is held from the check of a table's stacking until the
	// table is in place (see checkStacking).
	stackMu sync.Mutex
}

// OnRemove subscribes f to the removals of m's devices: f(d) runs once d
// is gone (Remove, the release of a RemoveLater, the last close of a
// device whose removal was deferred, a Create whose table failed): m no
// longer lists it, its tables are closed and its verbs fail with
// ErrNotFound. Layers that keep state per device (sessions, exports, the
// daemon) drop it in f, so a removed device is not pinned for the
// manager's lifetime.
//
// f runs once per removed device, on the goroutine that removed it,
// after every subscriber before it, with neither m's lock nor d's held.
// A lower device's last close may remove it while the device over it
// holds its ctl lock (a table letting go of it), so f must not take a
// device lock or wait for a verb: it should take its own short locks,
// drop its state and return. The returned function unsubscribes f.
func (m *Manager) OnRemove(f func(*Device)) (cancel func()) {
	p := &f
	m.mu.Lock()
	m.onRemove = append(m.onRemove, p)
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		m.onRemove = slices.DeleteFunc(m.onRemove, func(q *func(*Device)) bool { return q == p })
		m.mu.Unlock()
	}
}

// gone runs the OnRemove subscribers for d, which was just removed.
func (m *Manager) gone(d *Device) {
	m.mu.Lock()
	subs := slices.Clone(m.onRemove)
	m.mu.Unlock()
	for _, f := range subs {
		(*f)(d)
	}
}

// SwapGuard is asked before a resume makes next the live table of d in
// place of live (a forced removal's error table included), before d is
// suspended for it (a device suspended beforehand stays so), with d's
// control lock held: no other load, suspend or resume of d runs
// meanwhile. An error refuses the swap and leaves d as it was; otherwise
// release is called once the swap is done or has failed. The daemon
// recalls client mappings of memory the swap moves (stop the world),
// holding new mappings of d off until release.
type SwapGuard func(d *Device, live, next *Table) (release func(), err error)

// SetSwapGuard installs g for every device of m.
func (m *Manager) SetSwapGuard(g SwapGuard) {
	m.mu.Lock()
	m.guard = g
	m.mu.Unlock()
}

func (m *Manager) swapGuard() SwapGuard {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.guard
}

// NewManager returns an empty manager.
// Tables of its devices open /dev/mapper/NAME and /dev/dm-N through m
// (see Open), so a pool serves one manager.
func NewManager(reg *Registry, pool *DevicePool) *Manager {
	m := &Manager{reg: reg, pool: pool, devs: make(map[string]*Device)}
	pool.mu.Lock()
	pool.stack = m
	pool.mu.Unlock()
	return m
}

// Shared is CtorContext.Shared for the manager's tables: the value the
// targets of every table of m keep under key (tests reach a target
// type's per-Manager state through it).
func (m *Manager) Shared(key any, create func() any) any { return m.pool.sharedValue(key, create) }

// Registry returns the target types the manager builds tables from.
func (m *Manager) Registry() *Registry { return m.reg }

// CreateOptions mirror dmsetup create's options.
type CreateOptions struct {
	UUID     string
	Table    string // "" creates a device with no table (dmsetup create --notable)
	ReadOnly bool
	// Persistent asks for device number Number (see Device.Number), as
	// a restart that keeps numbers does, or dmsetup create -j MAJ -m MIN
	// (the kernel's DM_PERSISTENT_DEV_FLAG); otherwise the lowest free
	// number is given, as the kernel gives the lowest free minor.
	Persistent bool
	Number     uint64
}

// Limits on names, as the kernel's (DM_NAME_LEN 128, DM_UUID_LEN 129,
// both including the terminating NUL).
const (
	MaxNameLen = 127
	MaxUUIDLen = 128
)

// Create makes a device; with a table it is loaded and resumed, so the
// table is live when Create returns (dmsetup create).
func (m *Manager) Create(name string, o CreateOptions) (*Device, error) {
	if err := checkName("name", name, MaxNameLen); err != nil {
		return nil, err
	}
	if o.UUID != "" {
		if err := checkName("uuid", o.UUID, MaxUUIDLen); err != nil {
			return nil, err
		}
	}
	d := &Device{m: m, uuid: o.UUID}
	if o.ReadOnly {
		d.mode = ReadOnly
	}
	d.name.Store(&name)
	m.mu.Lock()
	if err := m.checkUnique(name, o.UUID); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if err := m.mint(d, o.Persistent, o.Number); err != nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	m.devs[name] = d
	m.mu.Unlock()
	if o.Table == "" {
		return d, nil
	}
	err := d.Load(o.Table)
	if err == nil {
		err = d.Resume()
	}
	if err != nil {
		return nil, errors.Join(err, m.drop(d))
	}
	return d, nil
}

func (m *Manager) drop(d *Device) error {
	m.mu.Lock()
	delete(m.devs, d.Name())
	m.mu.Unlock()
	d.ctl.Lock()
	err := d.destroy()
	d.ctl.Unlock()
	m.gone(d)
	return err
}

func checkName(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty device %s", ErrInvalidArgument, what)
	case len(s) > max:
		return fmt.Errorf("%w: device %s %.40q... is %d bytes, at most %d allowed", ErrInvalidArgument, what, s, len(s), max)
	case s == "." || s == "..":
		return fmt.Errorf("%w: device %s %q: '.' and '..' name directories, not devices: pick another %s", ErrInvalidArgument, what, s, what)
	}
	if bad := BadNameChar(s); bad != "" {
		return fmt.Errorf("%w: device %s %q contains %s, which `ls`, `dmsetup ls` and the tables cannot carry: use letters, digits and punctuation such as - _ . + : @", ErrInvalidArgument, what, s, bad)
	}
	return nil
}

// BadNameChar describes the first character of name that no device or
// region name may contain ("a tab at byte 3"), or is "" if there is none.
// Like dmsetup, daxsnap refuses what its own output cannot carry: names
// are printed one a line, in columns split at blanks, and as paths.
func BadNameChar(name string) string {
	for i, r := range name {
		var what string
		switch {
		case r == '/':
			what = "'/'"
		case r == 0:
			what = "a NUL byte"
		case r == '\n':
			what = "a newline"
		case r == '\t':
			what = "a tab"
		case r == ' ':
			what = "a space"
		case r == utf8.RuneError:
			what = "a byte that is not UTF-8"
		case unicode.IsSpace(r):
			what = fmt.Sprintf("a blank (%U)", r)
		case !unicode.IsPrint(r):
			what = fmt.Sprintf("a control or unprintable character (%U)", r)
		default:
			continue
		}
		return fmt.Sprintf("%s at byte %d", what, i)
	}
	return ""
}

// mint gives d number n if persistent, or else the lowest number no
// device of m has (the kernel's idr_alloc of a minor); m.mu held.
func (m *Manager) mint(d *Device, persistent bool, n uint64) error {
	used := make(map[uint64]*Device, len(m.devs))
	for _, other := range m.devs {
		used[other.number] = other
	}
	if !persistent {
		for n = 0; used[n] != nil; n++ {
		}
	}
	if n > MaxMinor {
		return fmt.Errorf("%w: device number %d is beyond the largest minor: give one from 0 to %d", ErrInvalidArgument, n, MaxMinor)
	}
	if other := used[n]; other != nil {
		return fmt.Errorf("%w: device number %d (%d:%d) belongs to %s", ErrExists, n, Major, n, other.Name())
	}
	d.number = n
	return nil
}

// GetByNumber returns the device whose number is n (dmsetup's -j MAJ -m
// MIN, or MAJ:MIN, where a name is expected).
func (m *Manager) GetByNumber(n uint64) (*Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.devs {
		if d.number == n {
			return d, nil
		}
	}
	return nil, fmt.Errorf("%d:%d: %w", Major, n, ErrNotFound)
}

func (m *Manager) checkUnique(name, uuid string) error {
	if _, ok := m.devs[name]; ok {
		return fmt.Errorf("create %s: %w", name, ErrExists)
	}
	if uuid == "" {
		return nil
	}
	for _, d := range m.devs {
		if d.uuid == uuid {
			return fmt.Errorf("create %s: %w: uuid %s belongs to %s", name, ErrExists, uuid, d.Name())
		}
	}
	return nil
}

// Get returns the device called name.
func (m *Manager) Get(name string) (*Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devs[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return d, nil
}

// List returns every device, sorted by name (dmsetup ls).
func (m *Manager) List() []*Device {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Device, 0, len(m.devs))
	for _, d := range m.devs {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// RemoveOptions mirror dmsetup remove's flags.
type RemoveOptions struct {
	// Force replaces the table of an open device with one that fails all
	// I/O (`error`) before attempting the removal, as dmsetup remove
	// --force does; the removal itself still needs the device closed.
	Force bool
	// Deferred removes an open device when its last user closes it.
	Deferred bool
}

// Remove destroys a device. An open device is refused with ErrBusy unless
// Deferred (removed on last close); Force first makes all its I/O fail.
// The OnRemove subscribers run before Remove returns.
func (m *Manager) Remove(name string, o RemoveOptions) error {
	release, err := m.RemoveLater(name, o)
	if rerr := release(); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// RemoveLater is Remove, except that the release of the removed device's
// tables (their targets' Close, and the devices those opened) and the
// OnRemove subscribers wait for the returned function, which the caller
// must call once, error or not (it does nothing when no device went).
// Meanwhile the device is gone for everyone else: m no longer lists it,
// and its verbs and I/O fail. The snapshot verbs remove a snapshot under
// its suspended origin and release it only after the origin's resume, as
// the kernel's do_resume destroys the old table after dm_resume: closing
// a COW store and unmapping its memory is no part of the time the
// origin's writers are held.
func (m *Manager) RemoveLater(name string, o RemoveOptions) (release func() error, err error) {
	d, err := m.Get(name)
	if err != nil {
		return func() error { return nil }, fmt.Errorf("remove %s", err)
	}
	tables, removed, err := m.remove(d, name, o)
	var once sync.Once
	return func() (cerr error) {
		once.Do(func() {
			if removed {
				cerr = closeTables(tables)
				m.gone(d)
			}
		})
		return cerr
	}, err
}

// remove is RemoveLater of d, found by name; removed says whether d is
// gone, tables are its tables, left for the caller to close.
func (m *Manager) remove(d *Device, name string, o RemoveOptions) (tables []*Table, removed bool, err error) {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.removed.Load() || d.Name() != name { // removed, or renamed meanwhile
		return nil, false, fmt.Errorf("remove %s: %w", name, ErrNotFound)
	}
	if d.openCount > 0 {
		if o.Force {
			if err := d.wipeLocked(); err != nil {
				return nil, false, fmt.Errorf("remove --force %s: replace table with error: %w", name, err)
			}
		}
		if o.Deferred {
			d.deferred = true
			return nil, false, nil
		}
		if o.Force {
			return nil, false, fmt.Errorf("remove --force %s: %w: its table is now `error` (every I/O fails), but it stays while open (open count %d): remove it again once closed, or with --deferred to remove it on last close",
				name, ErrBusy, d.openCount)
		}
		return nil, false, fmt.Errorf("remove %s: %w: open count %d; close it first, or use --deferred to remove it on last close", name, ErrBusy, d.openCount)
	}
	m.mu.Lock()
	delete(m.devs, name)
	m.mu.Unlock()
	return d.detach(), true, nil
}

// WipeTable replaces the live table with an `error` table of the same size
// (dmsetup wipe_table). `error` is DAX-capable, so the capability rule
// always allows it.
func (d *Device) WipeTable() error {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	return d.wipeLocked()
}

func (d *Device) wipeLocked() error {
	if d.live == nil {
		return nil
	}
	t, err := buildTable(d.m.reg, d.m.pool, d.Name(), fmt.Sprintf("0 %d error", d.live.size), d.mode, d, d.events.bump)
	if err != nil {
		return err
	}
	old := d.inactive
	d.inactive = t
	if err := d.resumeLocked(); err != nil {
		if d.inactive == t { // refused before the swap: as it was
			t.Close()
			d.inactive = old
		}
		return err
	}
	if old != nil {
		old.Close()
	}
	return nil
}

// Rename changes a device's name (dmsetup rename). Tables that use the
// device hold it by identity (its Number), as the kernel's do: they keep
// working, and print the new name (see DeviceRef.TableName).
func (m *Manager) Rename(old, name string) error {
	if err := checkName("name", name, MaxNameLen); err != nil {
		return err
	}
	d, err := m.Get(old)
	if err != nil {
		return fmt.Errorf("rename %s: %w", old, ErrNotFound)
	}
	// ctl before m.mu, as Remove takes them: a removal in flight finishes
	// first, and one that starts later finds the device by its new name.
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.removed.Load() {
		return fmt.Errorf("rename %s: %w", old, ErrNotFound)
	}
	m.mu.Lock()
	if m.devs[old] != d {
		m.mu.Unlock()
		return fmt.Errorf("rename %s: %w", old, ErrNotFound)
	}
	if _, ok := m.devs[name]; ok {
		m.mu.Unlock()
		return fmt.Errorf("rename %s to %s: %w", old, name, ErrExists)
	}
	delete(m.devs, old)
	m.devs[name] = d
	d.name.Store(&name)
	m.mu.Unlock()
	// The kernel's dm_hash_rename raises an event on the live table,
	// to wake its waiters: a device without one counts none.
	if d.live != nil {
		d.events.bump()
	}
	return nil
}
