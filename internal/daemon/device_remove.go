package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Remove destroys a device (dmsetup remove [--force] [--deferred]).
func (d deviceService) Remove(ctx context.Context, name string, req wire.Remove) error {
	unlock := d.locks.lock(name)
	defer unlock()
	dev, err := d.device("remove", name)
	if err != nil {
		return err
	}
	if err := d.snaps.GuardOfflineMerge("remove", name); err != nil {
		return err
	}
	if users := d.holders.users(name); len(users) > 0 && !req.Deferred && !req.Force {
		// No hint of --force here: it would make their I/O fail too
		// (for ORIGIN-real, the origin's and every snapshot's).
		return errorf(dm.ErrBusy, "remove %s: the tables of %s map %s%s: %s",
			name, strings.Join(users, ", "), MapperPrefix, name, d.usedHint(name, users))
	}
	wasLive := dev.Info().LiveTable
	remove := func() error { return d.mgr.Remove(name, dm.RemoveOptions{Force: req.Force, Deferred: req.Deferred}) }
	err = d.store.DeviceTransition(name, state.Op{Verb: "remove"}, remove, func() *state.Device { return d.record(dev) })
	if req.Force && dev.Info().LiveTable {
		d.devs.updateNote(name, func(n *note) { n.degraded, n.keptLive = "", "" })
	}
	if err != nil && req.Force && !req.Deferred && wasLive && errors.Is(err, dm.ErrBusy) && d.wiped(dev) {
		// dm replaced the table and kept the device, as the kernel's
		// remove --force does on an open device: say so, and who holds it.
		d.log.Warn("remove --force: table replaced by error, device still open", "device", name, "holders", d.holders.describe(dev))
		return errorf(dm.ErrBusy, "remove --force %s: its table is now `error`, so every I/O to it fails, and the state file says so; "+
			"but %s stays while it is open, held by %s. Once they let go, `daxsnap remove %s` removes it; `daxsnap remove --deferred %s` removes it at their last close",
			name, name, d.holders.describe(dev), name, name)
	}
	if err != nil {
		return err
	}
	d.log.Info("device removed", "device", name, "deferred", dev.Info().DeferredRemove)
	return nil
}

// wiped reports whether dev's live table is the `error` table a forced
// removal loads.
func (d *Daemon) wiped(dev *dm.Device) bool {
	var types []string
	dev.LiveTargets(func(l dm.TableLine, _ dm.Target) { types = append(types, l.Type) })
	return len(types) == 1 && types[0] == "error"
}

// usedHint says how to remove a device the tables of users map: for
// ORIGIN-real, through the snapshot verbs.
func (d *Daemon) usedHint(name string, users []string) string {
	if origin, ok := strings.CutSuffix(name, snapshots.RealSuffix); ok && origin != "" {
		if snaps := d.snaps.SnapshotsOf(origin); len(snaps) > 0 {
			return fmt.Sprintf("it holds the data of origin %s under its snapshots %s: remove the snapshots with `daxsnap snapshot remove` (after the last one, %s gets its table back and %s goes)",
				origin, strings.Join(snaps, ", "), origin, name)
		}
	}
	return fmt.Sprintf("remove them or load tables without it first; --deferred removes it once they let go (%s)", strings.Join(users, ", "))
}
