package daemon

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// open is the device pool's opener: /dev/mapper/NAME is another mapped
// device, anything else a backing device.
func (d *Daemon) open(name string, readOnly bool) (backing.Device, error) {
	if rest, ok := strings.CutPrefix(name, MapperPrefix); ok {
		return d.openMapped(rest, readOnly)
	}
	opts := backing.Options{ReadOnly: readOnly}
	if rec, ok := d.regionAt(name); ok {
		// A region file must be the one pmem create made, in a directory
		// only the daemon's uid writes.
		if err := checkRegionDir(filepath.Dir(name)); err != nil {
			return nil, fmt.Errorf("open region %s: %w", rec.Name, err)
		}
		opts.NoFollow, opts.Verify = true, regionFileCheck(rec)
	}
	return backing.Open(name, opts)
}

// openMapped opens mapped device name as a backing device of another
// table; it counts as an open of that device until the table lets go.
func (d *Daemon) openMapped(name string, readOnly bool) (backing.Device, error) {
	dev, err := d.mgr.Get(name)
	if err != nil {
		return nil, fmt.Errorf("%s%s: no such mapped device: create it first (`daxsnap ls` lists them)", MapperPrefix, name)
	}
	in := dev.Info()
	if !in.LiveTable {
		return nil, fmt.Errorf("%s%s has no live table: load one and resume it first", MapperPrefix, name)
	}
	release, err := d.hold(dev, dm.Holder{Kind: dm.HolderTable})
	if err != nil {
		return nil, fmt.Errorf("%s%s: %w", MapperPrefix, name, err)
	}
	return &mappedDevice{dev: dev, id: d.ids.get(dev),
		readOnly: readOnly || in.ReadOnly, release: release}, nil
}

// hold opens dev for holder h (it counts in the open count and shows in
// its holders) and returns the release of that open.
func (d *Daemon) hold(dev *dm.Device, h dm.Holder) (release func() error, err error) {
	if err := dev.OpenBy(h); err != nil {
		return nil, err
	}
	return func() error { return d.closeDevice(dev, h) }, nil
}

// closeDevice releases one open of dev by h. If that was the last user
// of a device with a deferred removal, dm removed it: forget its record.
func (d *Daemon) closeDevice(dev *dm.Device, h dm.Holder) error {
	err := dev.CloseBy(h)
	d.usersChanged()
	if d.closing.Load() {
		return err
	}
	if got, gerr := d.mgr.Get(dev.Name()); gerr == nil && got == dev {
		return err
	}
	// Reconcile in the background: the caller may hold another device's
	// lock (a table closing), and lock order is by name, not by stack.
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.forgetRemoved(dev)
	}()
	return err
}

// forgetRemoved drops the record of dev, which dm removed on its last
// close, unless a new device took its name meanwhile.
func (d *Daemon) forgetRemoved(dev *dm.Device) {
	name := dev.Name()
	unlock := d.locks.lock(name)
	defer unlock()
	if _, err := d.mgr.Get(name); err == nil || d.closing.Load() {
		return
	}
	d.ids.forget(dev)
	d.owners.forget(dev)
	d.autoext.forget(dev)
	d.metrics.forget(name)
	d.notes.drop(name)
	if err := d.store.DeleteDevice(name); err != nil {
		d.log.Error("deferred removal: drop record", "device", name, "err", err)
		return
	}
	d.log.Info("deferred removal done: last user closed the device", "device", name)
}
