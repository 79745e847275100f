package daemon

import (
	"github.com/daxsnap/daxsnap/internal/dm"
)

// hold opens dev for holder h (it counts in the open count and shows in
// its holders) and returns the release of that open.
func (d *Daemon) hold(dev *dm.Device, h dm.Holder) (release func() error, err error) {
	if err := dev.OpenBy(h); err != nil {
		return nil, err
	}
	return func() error { return d.closeDevice(dev, h) }, nil
}

// closeDevice releases one open of dev by h. If that was the last user
// of a device with a deferred removal, dm removes it (see removed).
func (d *Daemon) closeDevice(dev *dm.Device, h dm.Holder) error {
	err := dev.CloseBy(h)
	d.usersChanged()
	return err
}

// removed is the daemon's dm.Manager.OnRemove subscriber: dm removed
// dev (a verb, a snapshot verb, or a deferred removal at the last close
// of an NBD client, a FUSE file, or the table of a device stacked on
// it), so what the daemon kept of it goes, whatever the name now names.
// A deferred removal was no verb of the daemon's: its state file record
// goes too, in the background: the close may come from a table letting
// go, under another device's locks, and the name lock is taken after
// those.
func (d *Daemon) removed(dev *dm.Device) {
	d.devs.forget(dev)
	d.cks.forget(dev)
	d.snaps.Forget(dev)
	d.metrics.forget(dev.Name())
	if d.closing.Load() {
		return
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.forgetRemoved(dev)
	}()
}

// forgetRemoved drops the state file record of dev, which dm removed on
// its last close, unless a new device took its name meanwhile.
func (d *Daemon) forgetRemoved(dev *dm.Device) {
	name := dev.Name()
	unlock := d.locks.lock(name)
	defer unlock()
	if !dev.Info().DeferredRemove || d.closing.Load() {
		return // a verb removed it, and dropped the record itself
	}
	if _, err := d.mgr.Get(name); err == nil {
		return
	}
	if err := d.store.DeleteDevice(name); err != nil {
		d.log.Error("deferred removal: drop record", "device", name, "err", err)
		return
	}
	d.log.Info("deferred removal done: last user closed the device", "device", name)
}
