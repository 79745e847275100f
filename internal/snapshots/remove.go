package snapshots

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// SnapshotRemove removes a snapshot (lvremove): with the origin suspended,
// the snapshot device goes; if it was the origin's last, the origin gets
// ORIGIN-real's table back and ORIGIN-real goes too. A COW file the
// daemon created is deleted.
func (mg *Manager) SnapshotRemove(name string) error {
	op := "snapshot remove " + name
	s, err := mg.findSnapshot(op, name)
	if err != nil {
		return err
	}
	if err := s.managed(op); err != nil {
		return err
	}
	l := s.layout()
	unlock := mg.lockLayout(l, name)
	defer unlock()
	if s, err = mg.findSnapshot(op, name); err != nil { // it may have changed before the locks
		return err
	}
	if err := s.managed(op); err != nil {
		return err
	}
	origin, err := mg.devs.Get(l.origin)
	if err != nil {
		return errorf(dm.ErrNotFound, "%s: its origin %s is gone: remove %s with `daxsnap remove %s`", op, l.origin, name, name)
	}
	if err := mg.checkRemovable(op, l, s, origin); err != nil {
		return err
	}
	err = mg.store.DeviceTransition(l.origin, state.Op{Verb: "snapshot-remove", Arg: name}, func() error { return mg.doRemove(op, l, s, origin) },
		func() *state.Device { return mg.host.Record(origin) })
	if err != nil {
		return err
	}
	mg.log.Info("snapshot removed", "snapshot", name, "origin", l.origin)
	return nil
}

// checkRemovable refuses to remove a snapshot that is merging (unless the
// merge failed) or in use.
func (mg *Manager) checkRemovable(op string, l originLayout, s snapView, origin *dm.Device) error {
	if in := s.dev.Info(); in.OpenCount > 0 {
		return errorf(dm.ErrBusy, "%s: %s is open (%d users, e.g. NBD clients): disconnect them first", op, s.name, in.OpenCount)
	}
	m, merging := mg.mergeOf(l)
	if merging {
		failed := mg.mergeFailed(m)
		switch {
		case sameFile(m.line.COW, s.line.COW) && !failed:
			return errorf(dm.ErrBusy, "%s: %s is merging into %s: wait for the merge to finish (`daxsnap snapshot merge %s` waits)", op, s.name, l.origin, s.name)
		case m.offline && !failed:
			return errorf(dm.ErrBusy, "%s: %s is suspended while another snapshot merges into it offline: wait for that merge (`daxsnap snapshot list %s`)", op, l.origin, l.origin)
		}
	}
	if in := origin.Info(); in.Suspended && !(merging && m.offline) {
		return errorf(dm.ErrSuspended, "%s: origin %s is suspended: resume it first", op, l.origin)
	}
	return nil
}

// mergeFailed reports whether a merge stopped on an error.
func (mg *Manager) mergeFailed(m mergeView) bool {
	st := usageOf(m.dev).state
	return st == wire.SnapshotMergeFailed || st == wire.SnapshotInvalid
}

// doRemove takes the snapshot out from under a suspended origin. A failed
// merge of it is abandoned: the origin gets its snapshot-origin (or
// ORIGIN-real's) table back.
func (mg *Manager) doRemove(op string, l originLayout, s snapView, origin *dm.Device) error {
	if err := mg.quiesceOrigin(op, origin); err != nil {
		return err
	}
	if err := mg.fault("remove-snapshot"); err != nil {
		return errors.Join(fmt.Errorf("%s: %w", op, err), origin.Resume())
	}
	if m, ok := mg.mergeOf(l); ok && m.offline && sameFile(m.line.COW, s.line.COW) {
		if err := mg.removeDevice(m.dev, evenIfOpen); err != nil {
			return errors.Join(fmt.Errorf("%s: remove the failed merge device %s: %w", op, l.merge, err), origin.Resume())
		}
	}
	release, err := mg.removeDeviceLater(s.dev, dm.RemoveOptions{})
	if err != nil {
		return errors.Join(fmt.Errorf("%s: %w", op, err), origin.Resume(), release())
	}
	resumed, released := mg.settleOriginReleasing(l, origin, release)
	if resumed != nil {
		return fmt.Errorf("%s: %s is removed, but giving %s its table back failed: %w", op, s.name, l.origin, errors.Join(resumed, released))
	}
	if released != nil {
		return fmt.Errorf("%s: %s is removed, but closing its COW failed: %w", op, s.name, released)
	}
	return mg.removeOwnedCOW(s.line.COW)
}
