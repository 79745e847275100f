package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// rename is one device's old and new name.
type rename struct{ from, to string }

// Rename renames a device (dmsetup rename). Tables that use it hold it by
// identity, as the kernel's do: they keep working, name it by its new
// name, and their devices' records say so. Renaming an origin renames its
// snapshot layout with it, as lvrename does: ORIGIN-real and ORIGIN-merge
// become NEW-real and NEW-merge, so the snapshots stay its snapshots.
func (d deviceService) Rename(ctx context.Context, name string, req wire.Rename) (wire.Info, error) {
	plan, users, unlock, err := d.lockRename(name, req.NewName)
	if err != nil {
		return wire.Info{}, err
	}
	defer unlock()
	dev, err := d.device("rename", name)
	if err != nil {
		return wire.Info{}, err
	}
	if err := d.applyRename(plan, users); err != nil {
		return wire.Info{}, err
	}
	for _, r := range plan {
		d.log.Info("device renamed", "device", r.from, "new_name", r.to)
	}
	return d.info(dev), nil
}

// lockRename works out the renames and the devices whose tables name the
// renamed ones, and locks all of them, then graphMu. The users are found
// before their locks are taken, so it checks again once they are and
// starts over if a table changed meanwhile.
func (d *Daemon) lockRename(name, to string) ([]rename, []string, func(), error) {
	for range 10 {
		plan, err := d.renamePlan(name, to)
		if err != nil {
			return nil, nil, nil, err
		}
		users := d.usersOf(plan)
		names := slices.Clone(users)
		for _, r := range plan {
			names = append(names, r.from, r.to)
		}
		unlockNames := d.locks.lock(names...)
		d.graphMu.Lock()
		unlock := func() { d.graphMu.Unlock(); unlockNames() }
		plan2, err := d.renamePlan(name, to)
		if err != nil {
			unlock()
			return nil, nil, nil, err
		}
		if slices.Equal(plan, plan2) && slices.Equal(users, d.usersOf(plan)) {
			return plan, users, unlock, nil
		}
		unlock()
	}
	return nil, nil, nil, errorf(dm.ErrBusy, "rename %s: the devices around it keep changing: retry", name)
}

// renamePlan lists the renames that renaming name to `to` takes, or says
// why it cannot be done.
func (d *Daemon) renamePlan(name, to string) ([]rename, error) {
	if _, err := d.device("rename", name); err != nil {
		return nil, err
	}
	if to == name {
		return nil, errorf(dm.ErrInvalidArgument, "rename %s: the new name is the old one: give another", name)
	}
	for _, suffix := range []string{snapshots.RealSuffix, snapshots.MergeSuffix} {
		if origin, ok := strings.CutSuffix(name, suffix); ok && origin != "" && d.exists(origin) {
			return nil, errorf(dm.ErrInvalidArgument, "rename %s: it belongs to the snapshot layout of origin %s: rename %s, which renames %s with it",
				name, origin, origin, name)
		}
		if origin, ok := strings.CutSuffix(to, suffix); ok && origin != "" && d.exists(origin) {
			return nil, errorf(dm.ErrInvalidArgument, "rename %s to %s: names ORIGIN%s are kept for the snapshot layout of origin %s: pick another name",
				name, to, suffix, origin)
		}
	}
	plan := []rename{{name, to}}
	for _, suffix := range []string{snapshots.RealSuffix, snapshots.MergeSuffix} {
		if p := (rename{name + suffix, to + suffix}); d.exists(p.from) {
			plan = append(plan, p)
		}
	}
	if len(plan) > 1 {
		if err := d.snaps.CheckRename(name); err != nil {
			return nil, err
		}
	}
	for _, p := range plan {
		if len(p.to) > dm.MaxNameLen {
			return nil, errorf(dm.ErrInvalidArgument, "rename %s: %s would be %d bytes, at most %d allowed: pick a shorter name", name, p.to, len(p.to), dm.MaxNameLen)
		}
		if d.exists(p.to) {
			return nil, errorf(dm.ErrExists, "rename %s to %s: a device called %s exists: pick another name, or remove it first", name, to, p.to)
		}
	}
	return plan, nil
}

func (d *Daemon) exists(name string) bool {
	_, err := d.mgr.Get(name)
	return err == nil
}

// usersOf lists, sorted, the devices outside plan whose records name a
// device plan renames (see users): dm's tables hold it by identity, so
// they print its new name, and renameRefs rewrites the kept ones.
func (d *Daemon) usersOf(plan []rename) []string {
	renamed := map[string]bool{}
	for _, r := range plan {
		renamed[r.from] = true
	}
	var out []string
	for _, r := range plan {
		out = append(out, d.holders.users(r.from)...)
	}
	out = slices.DeleteFunc(out, func(u string) bool { return renamed[u] })
	slices.Sort(out)
	return slices.Compact(out)
}

// applyRename renames in dm, then rewrites the records of the renamed
// devices and of their users in one transaction; if that fails, the
// names go back.
func (d *Daemon) applyRename(plan []rename, users []string) error {
	var done []rename
	undo := func() {
		for i := len(done) - 1; i >= 0; i-- {
			r := done[i]
			if err := d.mgr.Rename(r.to, r.from); err != nil {
				d.log.Error("rename: undo", "device", r.to, "back_to", r.from, "err", err)
			}
		}
		d.devs.renameRefs(reversed(done))
	}
	for _, r := range plan {
		if err := d.mgr.Rename(r.from, r.to); err != nil {
			undo()
			return fmt.Errorf("rename %s to %s: %w", r.from, r.to, err)
		}
		done = append(done, r)
	}
	d.devs.renameRefs(plan)
	var drop []string
	var recs []state.Device
	keep := func(old, now string) error {
		dev, err := d.mgr.Get(now)
		if err != nil {
			return err
		}
		rec := d.record(dev)
		if rec == nil {
			return nil
		}
		if prev, ok, err := d.store.Device(old); err != nil {
			return err
		} else if ok {
			rec.Op = prev.Op // an interrupted operation stays recorded
		}
		recs = append(recs, *rec)
		return nil
	}
	for _, r := range plan {
		drop = append(drop, r.from)
		if err := keep(r.from, r.to); err != nil {
			undo()
			return err
		}
	}
	for _, u := range users {
		if err := keep(u, u); err != nil {
			undo()
			return err
		}
	}
	if err := d.store.ReplaceDevices(drop, recs); err != nil {
		undo()
		return fmt.Errorf("rename %s: %w; the names are as they were", plan[0].from, err)
	}
	for _, r := range plan {
		d.metrics.forget(r.from)
	}
	return nil
}

func reversed(plan []rename) []rename {
	out := make([]rename, len(plan))
	for i, r := range plan {
		out[len(plan)-1-i] = rename{r.to, r.from}
	}
	return out
}
