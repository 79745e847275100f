package snapshots

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// The building blocks of the snapshot verbs. Callers hold the locks of
// every device involved (lockLayout), so none of these lock.

// lockLayout takes the name locks of l's devices and of names, then
// the locks table loads take, in the daemon's lock order.
func (mg *Manager) lockLayout(l originLayout, names ...string) (unlock func()) {
	unlockNames := mg.host.Lock(append([]string{l.origin, l.real, l.merge}, names...)...)
	unlockTables := mg.host.LockTables()
	return func() {
		unlockTables()
		unlockNames()
	}
}

// createDevice creates name with opts (a table, loaded and resumed) as a
// state transition.
func (mg *Manager) createDevice(name string, opts dm.CreateOptions) (*dm.Device, error) {
	dev, err := mg.host.CreateDevice(name, opts)
	if err == nil {
		mg.ForgetMerge(name)
	}
	return dev, err
}

// ForgetMerge drops the record of a finished merge of a snapshot called
// name, now that a new device has the name: a later `snapshot merge
// name` is about the new one.
func (mg *Manager) ForgetMerge(name string) {
	if err := mg.store.DeleteMerge(name); err != nil {
		mg.log.Warn("cannot drop the record of a finished merge", "snapshot", name, "err", err)
	}
}

// evenIfOpen removes a device still open (an NBD client connected): it
// gets an `error` table and goes on its last close.
var evenIfOpen = dm.RemoveOptions{Force: true, Deferred: true}

// removeDevice removes a device as a state transition, with opts if it
// is open (evenIfOpen, or the zero options: refused as busy); a device
// nobody has open is removed at once.
func (mg *Manager) removeDevice(dev *dm.Device, opts dm.RemoveOptions) error {
	release, err := mg.removeDeviceLater(dev, opts)
	if rerr := release(); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// removeDeviceLater is removeDevice, except that the release of dev's
// tables waits for the returned function (see dm.Manager.RemoveLater),
// which the caller calls once, error or not.
func (mg *Manager) removeDeviceLater(dev *dm.Device, opts dm.RemoveOptions) (release func() error, err error) {
	if dev.Info().OpenCount == 0 {
		opts = dm.RemoveOptions{}
	}
	return mg.host.RemoveDevice(dev, opts)
}

// quiesceOrigin flushes and suspends the origin: in-flight writes finish
// (and copy out to the snapshots they must), new ones wait.
func (mg *Manager) quiesceOrigin(op string, dev *dm.Device) error {
	if in := dev.Info(); in.LiveTable && !in.Suspended {
		if err := dev.Flush(); err != nil {
			return fmt.Errorf("%s: flush %s before suspending it: %w", op, dev.Name(), err)
		}
	}
	return dev.Suspend(dm.SuspendOptions{})
}

// wantedOriginTable is the table the origin should have for the
// snapshots it has: snapshot-origin over ORIGIN-real while any remain,
// ORIGIN-real's own table once none do, and what it has when it does not
// sit on ORIGIN-real at all.
func (mg *Manager) wantedOriginTable(l originLayout, origin *dm.Device) (string, error) {
	live, _ := origin.Table(dm.Live)
	over, ok := originOver(live)
	if !ok || over != l.realPath() {
		return live, nil
	}
	if m, ok := mg.mergeOf(l); ok && !m.offline && !mg.mergeFailed(m) {
		if _, ok := mg.mergingSnapshot(l, m); ok {
			return live, nil // a merge still running keeps its table
		}
	}
	if len(mg.snapshotsOf(l)) > 0 {
		return originTable(origin.Info().Size, l), nil
	}
	real, err := mg.devs.Get(l.real)
	if err != nil {
		return "", fmt.Errorf("%s maps %s, which is gone: load a table into %s by hand", l.origin, l.realPath(), l.origin)
	}
	return real.Table(dm.Live)
}

// settleOrigin gives a suspended origin the table wantedOriginTable says
// and resumes it, then removes ORIGIN-real if nothing uses it any more.
func (mg *Manager) settleOrigin(l originLayout, origin *dm.Device) error {
	if err := mg.resumeOrigin(l, origin); err != nil {
		return err
	}
	return mg.afterResume(l, origin)
}

// afterResume is the end of settleOrigin, once the origin runs: its
// record, and ORIGIN-real removed if nothing uses it any more.
func (mg *Manager) afterResume(l originLayout, origin *dm.Device) error {
	if err := mg.recordMidOp(origin); err != nil {
		return err
	}
	return mg.dropUnusedReal(l)
}

// settleOriginReleasing is settleOrigin after a removal under the
// origin's suspend: release (the removed devices' tables letting go, see
// removeDeviceLater) runs once the origin runs again, as the kernel
// destroys an old table only after the resume, so the origin's writers
// are not held for a COW store's close or an unmap. Only the origin's
// copy-before-write may still reach a removed snapshot meanwhile, and the
// COW's close waits for it. ORIGIN-real can go only after the release
// (afterResume). It reports the settling's error and the release's apart.
func (mg *Manager) settleOriginReleasing(l originLayout, origin *dm.Device, release func() error) (settled, released error) {
	settled = mg.resumeOrigin(l, origin)
	released = errors.Join(mg.fault("release-snapshot"), release())
	if settled == nil {
		settled = mg.afterResume(l, origin)
	}
	return settled, released
}

// resumeOrigin gives a suspended origin the table wantedOriginTable says
// and resumes it.
func (mg *Manager) resumeOrigin(l originLayout, origin *dm.Device) error {
	want, err := mg.wantedOriginTable(l, origin)
	if err != nil {
		return errors.Join(err, origin.Resume())
	}
	if live, _ := origin.Table(dm.Live); live != want {
		if err := origin.Load(want); err != nil {
			return errors.Join(fmt.Errorf("load %s with %q: %w", l.origin, want, err), origin.Resume())
		}
	}
	return origin.Resume()
}

// recordMidOp rewrites a device's record with its tables as they are now,
// keeping the op in flight recorded: once the origin no longer maps
// ORIGIN-real, which is about to go, a stop must not bring back a table
// that names it.
func (mg *Manager) recordMidOp(dev *dm.Device) error {
	rec, ok, err := mg.store.Device(dev.Name())
	now := mg.host.Record(dev)
	if err != nil || !ok || now == nil {
		return err
	}
	now.Op = rec.Op
	return mg.store.PutDevice(*now)
}

// dropUnusedReal removes ORIGIN-real once no table maps it.
func (mg *Manager) dropUnusedReal(l originLayout) error {
	real, err := mg.devs.Get(l.real)
	if err != nil || len(mg.host.Users(l.real)) > 0 {
		return nil
	}
	if err := mg.removeDevice(real, dm.RemoveOptions{}); err != nil {
		return fmt.Errorf("remove %s, which nothing maps any more: %w", l.real, err)
	}
	return nil
}

// undoStack runs compensating steps in reverse order.
type undoStack []func() error

func (u *undoStack) push(fn func() error) { *u = append(*u, fn) }

// unwind undoes everything and joins err with what undoing failed.
func (u undoStack) unwind(op string, err error) error {
	var errs []error
	for i := len(u) - 1; i >= 0; i-- {
		if uerr := u[i](); uerr != nil {
			errs = append(errs, uerr)
		}
	}
	if len(errs) > 0 {
		return errors.Join(err, fmt.Errorf("%s: undoing it failed too, check `daxsnap ls` and `daxsnap snapshot list`: %w", op, errors.Join(errs...)))
	}
	return err
}

// fault fails step if the configured FailStep (tests) says so.
func (mg *Manager) fault(step string) error {
	if mg.cfg.FailStep != nil {
		return mg.cfg.FailStep(step)
	}
	return nil
}
