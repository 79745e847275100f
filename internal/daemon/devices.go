package daemon

import (
	"context"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// device returns the device called name, or a not-found error for op.
func (d *Daemon) device(op, name string) (*dm.Device, error) {
	dev, err := d.mgr.Get(name)
	if err != nil {
		return nil, errorf(dm.ErrNotFound, "%s %s: no such device: `daxsnap ls` lists the devices", op, name)
	}
	return dev, nil
}

// mutate runs op on device name as a state transition: the record says
// op is in flight while fn runs, then holds what the device has become.
func (d *Daemon) mutate(op, name string, fn func(*dm.Device) error) error {
	unlock := d.locks.lock(name)
	defer unlock()
	dev, err := d.device(op, name)
	if err != nil {
		return err
	}
	err = d.store.DeviceTransition(name, state.Op{Verb: op}, func() error { return fn(dev) },
		func() *state.Device { return d.record(dev) })
	if err == nil {
		d.devs.updateNote(name, func(n *note) { n.interrupted = "" })
	}
	return err
}

// Create makes a device (dmsetup create): with a table, loaded and resumed.
func (d deviceService) Create(ctx context.Context, req wire.DeviceCreate) (wire.Info, error) {
	if err := checkCreate(req); err != nil {
		return wire.Info{}, err
	}
	if err := d.refuseWhileStopping("create " + req.Name); err != nil {
		return wire.Info{}, err
	}
	owner, err := ownerOf(req)
	if err != nil {
		return wire.Info{}, err
	}
	unlock := d.locks.lock(req.Name)
	defer unlock()
	if _, err := d.mgr.Get(req.Name); err == nil {
		return wire.Info{}, errorf(dm.ErrExists, "create %s: a device with that name exists: pick another name, or remove it first", req.Name)
	}
	d.graphMu.Lock()
	defer d.graphMu.Unlock()
	defer d.regions.LockTables()()
	var dev *dm.Device
	create := func() (err error) {
		dev, err = d.mgr.Create(req.Name, dm.CreateOptions{UUID: req.UUID, Table: req.Table, ReadOnly: req.ReadOnly})
		if dev != nil {
			d.devs.setOwner(dev, owner)
		}
		return err
	}
	outcome := func() *state.Device {
		if dev == nil {
			return nil
		}
		return d.record(dev)
	}
	if err := d.store.DeviceTransition(req.Name, state.Op{Verb: "create"}, create, outcome); err != nil {
		return wire.Info{}, err
	}
	d.snaps.ForgetMerge(req.Name)
	d.log.Info("device created", "device", req.Name, "table", req.Table != "", "owner", owner.String())
	return d.info(dev), nil
}

func checkCreate(req wire.DeviceCreate) error {
	switch {
	case req.Name == "" || len(req.Name) > dm.MaxNameLen:
		return errorf(dm.ErrInvalidArgument, "create: device name %.40q: give a name of 1 to %d bytes", req.Name, dm.MaxNameLen)
	case req.NoTable && req.Table != "":
		return errorf(dm.ErrInvalidArgument, "create %s: both a table and no_table given: drop one", req.Name)
	case !req.NoTable && req.Table == "":
		return errorf(dm.ErrInvalidArgument, "create %s: no table given: pass one (--table TEXT, a file or stdin), or --notable for a device without one", req.Name)
	}
	return nil
}

// Load puts a table in the device's inactive slot (dmsetup load).
func (d deviceService) Load(ctx context.Context, name string, req wire.Load) error {
	if req.Table == "" {
		return errorf(dm.ErrInvalidArgument, "load %s: no table given: pass the table text", name)
	}
	return d.mutate("load", name, func(dev *dm.Device) error {
		d.graphMu.Lock()
		defer d.graphMu.Unlock()
		defer d.regions.LockTables()()
		return dev.Load(req.Table)
	})
}

// Suspend flushes the device (unless NoFlush) and suspends it: in-flight
// I/O drains, new I/O waits for resume.
func (d deviceService) Suspend(ctx context.Context, name string, req wire.Suspend) error {
	return d.mutate("suspend", name, func(dev *dm.Device) error {
		in := dev.Info()
		if !req.NoFlush && in.LiveTable && !in.Suspended {
			if err := dev.Flush(); err != nil {
				return fmt.Errorf("suspend %s: flush before suspending: %w; retry, or suspend with --noflush", name, err)
			}
		}
		return dev.Suspend(dm.SuspendOptions{NoFlush: req.NoFlush})
	})
}

// Resume swaps in the inactive table, if any, and lets I/O flow.
func (d deviceService) Resume(ctx context.Context, name string) error {
	// Refused at once, not after waiting for name's lock: the finish of an
	// offline merge holds that lock for as long as it takes, and a resume
	// queued behind it would wait for all of it.
	if err := d.snaps.GuardOfflineMerge("resume", name); err != nil {
		return err
	}
	return d.mutate("resume", name, func(dev *dm.Device) error {
		if err := d.snaps.GuardOfflineMerge("resume", name); err != nil {
			return err
		}
		swap := dev.Info().InactiveTable
		if err := dev.Resume(); err != nil {
			return err
		}
		if swap {
			d.devs.updateNote(name, func(n *note) { n.degraded, n.keptLive = "", "" })
		}
		return nil
	})
}

// Clear drops the inactive table.
func (d deviceService) Clear(ctx context.Context, name string) error {
	return d.mutate("clear", name, (*dm.Device).Clear)
}

// WipeTable replaces the live table with `error` of the same size.
func (d deviceService) WipeTable(ctx context.Context, name string) error {
	return d.mutate("wipe_table", name, func(dev *dm.Device) error {
		if err := dev.WipeTable(); err != nil {
			return err
		}
		d.devs.updateNote(name, func(n *note) { n.degraded, n.keptLive = "", "" })
		return nil
	})
}
