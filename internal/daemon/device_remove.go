package daemon

import (
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Remove destroys a device (dmsetup remove [--force] [--deferred]).
func (d *Daemon) Remove(name string, req wire.Remove) error {
	unlock := d.locks.lock(name)
	defer unlock()
	dev, err := d.device("remove", name)
	if err != nil {
		return err
	}
	if err := d.guardOfflineMerge("remove", name); err != nil {
		return err
	}
	if users := d.users(name); len(users) > 0 && !req.Deferred && !req.Force {
		return errorf(dm.ErrBusy, "remove %s: the tables of %s map %s%s: remove them or load tables without it first (or --deferred, or --force to make its I/O fail)",
			name, strings.Join(users, ", "), MapperPrefix, name)
	}
	remove := func() error { return d.mgr.Remove(name, dm.RemoveOptions{Force: req.Force, Deferred: req.Deferred}) }
	err = d.store.DeviceTransition(name, "remove", remove, func() *state.Device { return d.record(dev) })
	if req.Force && dev.Info().LiveTable {
		d.notes.update(name, func(n *note) { n.degraded, n.keptLive = "", "" })
	}
	if _, gerr := d.mgr.Get(name); gerr != nil {
		d.forget(dev)
	}
	if err != nil {
		return err
	}
	d.log.Info("device removed", "device", name, "deferred", dev.Info().DeferredRemove)
	return nil
}

func (d *Daemon) forget(dev *dm.Device) {
	d.ids.forget(dev)
	d.owners.forget(dev)
	d.autoext.forget(dev)
	d.metrics.forget(dev.Name())
	d.notes.drop(dev.Name())
}
