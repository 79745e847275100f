package snapshots

import (
	"fmt"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/persistent"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
)

// Pending is a snapshot verb the last daemon stopped in the middle of,
// recorded as the Op of the origin's record ("snapshot-create NAME").
type Pending struct {
	origin, verb, name string
}

// ParseOp recognises the ops the snapshot verbs record.
func ParseOp(origin string, op state.Op) (Pending, bool) {
	switch op.Verb {
	case "snapshot-create", "snapshot-adopt", "snapshot-remove", "snapshot-merge", "snapshot-merge-finish":
		return Pending{origin: origin, verb: op.Verb, name: op.Arg}, op.Arg != ""
	}
	return Pending{}, false
}

// LostOnRestart says why a recorded table must not simply be loaded
// again: a transient snapshot's exceptions were in the last daemon's
// memory, so loading its table would present the origin's current data as
// the snapshot.
func LostOnRestart(table string) string {
	s, ok := parseSnapLine(table)
	if !ok || s.typ != snapshot.SnapshotType || s.Store != exstore.Transient {
		return ""
	}
	return "This transient snapshot (store N) kept its exceptions in the memory of the daemon that stopped, so its contents are gone; it serves an `error` table so that nothing reads the origin's current data as the snapshot. Remove it: `daxsnap snapshot remove NAME` (or `daxsnap remove NAME`)."
}

// Recover finishes the snapshot verbs the last daemon stopped in
// the middle of, once every device is back: a creation is undone (its
// caller never heard of success), a removal is completed, a merge is
// taken up again. Then a job finishes every merge in progress, and COW
// files no table uses are deleted if one of these operations left them,
// and put in lost+found otherwise.
func (mg *Manager) Recover(pending []Pending) {
	resumeFinish := map[string]string{}
	leftovers := map[string]bool{} // snapshots whose COW files in cowDir nobody wants
	for _, p := range pending {
		var err error
		switch p.verb {
		case "snapshot-create", "snapshot-remove", "snapshot-adopt":
			err = mg.recoverRemoval(p)
		case "snapshot-merge":
			err = mg.startMerge("resume interrupted snapshot merge "+p.name, p.name, state.Op{Verb: "snapshot-merge", Arg: p.name})
			if err == nil {
				err = mg.recoverOp(p)
			}
		case "snapshot-merge-finish":
			resumeFinish[p.origin] = p.name
			err = mg.recoverOp(p)
		}
		if err != nil {
			mg.log.Error("could not finish an interrupted snapshot operation; check the devices", "origin", p.origin, "op", p.verb, "snapshot", p.name, "err", err)
			mg.host.SetInterrupted(p.origin, fmt.Sprintf("The daemon stopped during `%s %s` and could not finish it at start: %v. Check `daxsnap snapshot list` and the tables.", p.verb, p.name, err))
			continue
		}
		if p.verb != "snapshot-merge" && p.verb != "snapshot-adopt" {
			// The caller of a creation never heard of success; a removal
			// or a finished merge wanted the COW gone.
			leftovers[p.name] = true
		}
		mg.log.Warn("finished a snapshot operation the last stop interrupted", "origin", p.origin, "op", p.verb, "snapshot", p.name)
	}
	for _, dev := range mg.devs.List() {
		l := layoutOf(dev.Name())
		if m, ok := mg.mergeOf(l); ok {
			if s, ok := mg.mergingSnapshot(l, m); ok {
				mg.startJob(l.origin, s.name, mergeRunning)
				delete(resumeFinish, l.origin)
			}
		}
	}
	for origin, name := range resumeFinish {
		mg.startJob(origin, name, finishResumed)
	}
	mg.tidyCOWDir(leftovers)
}

// recoverRemoval removes the snapshot a creation or removal left behind,
// and settles the origin's table for the snapshots that remain.
func (mg *Manager) recoverRemoval(p Pending) error {
	l := layoutOf(p.origin)
	unlock := mg.lockLayout(l, p.name)
	defer unlock()
	origin, err := mg.devs.Get(l.origin)
	if err != nil {
		return err
	}
	op := fmt.Sprintf("%s %s", p.verb, p.name)
	return mg.store.DeviceTransition(l.origin, state.Op{Verb: p.verb, Arg: p.name}, func() error {
		if dev, err := mg.devs.Get(p.name); err == nil && mg.leftBy(p, l, dev) {
			if err := mg.removeDevice(dev, evenIfOpen); err != nil {
				return err
			}
		}
		if err := mg.quiesceOrigin(op, origin); err != nil {
			return err
		}
		return mg.settleOrigin(l, origin)
	}, func() *state.Device { return mg.host.Record(origin) })
}

// leftBy reports whether dev, called p.name, is the snapshot p was
// creating or removing: a snapshot of l's real device, or (a creation
// only: it makes its device before the origin's suspend, prepareSnapshot)
// a device with no live table whose loaded table, if any, is one. The
// name was free when the creation began, under its lock.
func (mg *Manager) leftBy(p Pending, l originLayout, dev *dm.Device) bool {
	if s, ok := mg.snapshotOf(dev); ok {
		return s.line.Origin == l.realPath()
	}
	if p.verb != "snapshot-create" && p.verb != "snapshot-adopt" || mg.recordedLive(dev) != "" {
		return false
	}
	inactive, _ := dev.Table(dm.Inactive)
	if inactive == "" {
		return true
	}
	line, ok := parseSnapLine(inactive)
	return ok && line.typ == snapshot.SnapshotType && line.Origin == l.realPath()
}

// recoverOp clears a pending op whose work a merge job takes over.
func (mg *Manager) recoverOp(p Pending) error {
	origin, err := mg.devs.Get(p.origin)
	if err != nil {
		return err
	}
	unlock := mg.host.Lock(p.origin)
	defer unlock()
	return mg.store.DeviceTransition(p.origin, state.Op{Verb: p.verb, Arg: p.name}, func() error { return nil },
		func() *state.Device { return mg.host.Record(origin) })
}

// GuardOfflineMerge refuses to resume an origin, or remove the merge
// device, while a DAX origin merges offline: a write reaching the origin
// then would be overwritten by the merge.
func (mg *Manager) GuardOfflineMerge(op, name string) error {
	if m, ok := mg.offlineMergeOf(name); ok {
		return errorf(dm.ErrBusy, "%s %s: %s stays suspended while a snapshot merges into it offline on %s (it is DAX-capable, so it cannot load snapshot-merge itself): wait for the merge; `daxsnap snapshot list %s` shows its progress",
			op, name, name, m.dev.Name(), name)
	}
	if origin, ok := strings.CutSuffix(name, MergeSuffix); ok {
		if m, ok := mg.offlineMergeOf(origin); ok && m.dev.Name() == name {
			return errorf(dm.ErrBusy, "%s %s: it is merging a snapshot into %s offline: wait for the merge to finish; `daxsnap snapshot list %s` shows its progress",
				op, name, origin, origin)
		}
	}
	return nil
}

// HeaderLost says why a recorded table must not be loaded again: a
// persistent snapshot (or snapshot-merge) line whose COW no longer starts
// with the SnAp magic. A persistent store starts afresh on a zeroed
// header, so loading the table would rewrite area 0 and present the
// origin's current data as the snapshot; every recorded table was loaded
// once, so its COW had a header then. A COW that cannot be read is left
// to the load to report.
func (mg *Manager) HeaderLost(table string) string {
	lines, err := dm.ParseTable(table)
	if err != nil {
		return ""
	}
	for _, l := range lines {
		if l.Type != snapshot.SnapshotType.Name && l.Type != snapshot.MergeType.Name {
			continue
		}
		args, err := snapshot.ParseArgs(l.Args)
		if err != nil || !args.Store.IsPersistent() {
			continue
		}
		head, _, err := mg.cowHead(args.COW)
		if err != nil {
			continue
		}
		h, err := persistent.DecodeHeader(head)
		if err != nil {
			continue
		}
		if h.Magic != persistent.Magic {
			way := "remove it: `daxsnap snapshot remove NAME` (or `daxsnap remove NAME`)"
			if l.Type == snapshot.MergeType.Name {
				way = "its merge cannot go on; load a table without it, or remove the device"
			}
			return fmt.Sprintf("Its persistent COW %s no longer starts with a snapshot header (magic %#08x, not %#08x \"SnAp\"), so its exceptions cannot be found. Loading it would start an empty store there and present the origin's current data as the snapshot, so it serves an `error` table instead, and the daemon never re-initializes the COW. If you have a copy of the COW, put it back and restart `daxsnap serve`; otherwise %s.",
				args.COW, h.Magic, uint32(persistent.Magic), way)
		}
	}
	return ""
}

// CheckRename refuses to rename origin (and its ORIGIN-real and
// ORIGIN-merge with it) while a snapshot merges into it.
func (mg *Manager) CheckRename(origin string) error {
	if j := mg.merges.get(origin); j != nil && j.running() {
		return errorf(dm.ErrBusy, "rename %s: a snapshot merge into it is running: wait for it to finish (`daxsnap snapshot list` shows its progress), then rename", origin)
	}
	if _, ok := mg.mergeOf(layoutOf(origin)); ok {
		return errorf(dm.ErrBusy, "rename %s: a snapshot merge into it is in progress: wait for it to finish (`daxsnap snapshot list` shows its progress), then rename", origin)
	}
	return nil
}
