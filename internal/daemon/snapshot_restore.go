package daemon

import (
	"fmt"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
)

// pendingOp is a snapshot verb the last daemon stopped in the middle of,
// recorded as the Op of the origin's record ("snapshot-create NAME").
type pendingOp struct {
	origin, verb, name string
}

// parseSnapshotOp recognises the ops the snapshot verbs record.
func parseSnapshotOp(origin string, op state.Op) (pendingOp, bool) {
	switch op.Verb {
	case "snapshot-create", "snapshot-adopt", "snapshot-remove", "snapshot-merge", "snapshot-merge-finish":
		return pendingOp{origin: origin, verb: op.Verb, name: op.Arg}, op.Arg != ""
	}
	return pendingOp{}, false
}

// lostOnRestart says why a recorded table must not simply be loaded
// again: a transient snapshot's exceptions were in the last daemon's
// memory, so loading its table would present the origin's current data as
// the snapshot.
func lostOnRestart(table string) string {
	s, ok := parseSnapLine(table)
	if !ok || s.typ != "snapshot" || s.store != "N" {
		return ""
	}
	return "This transient snapshot (store N) kept its exceptions in the memory of the daemon that stopped, so its contents are gone; it serves an `error` table so that nothing reads the origin's current data as the snapshot. Remove it: `daxsnap snapshot remove NAME` (or `daxsnap remove NAME`)."
}

// recoverSnapshots finishes the snapshot verbs the last daemon stopped in
// the middle of, once every device is back: a creation is undone (its
// caller never heard of success), a removal is completed, a merge is
// taken up again. Then a job finishes every merge in progress, and COW
// files no table uses are deleted if one of these operations left them,
// and put in lost+found otherwise.
func (d *Daemon) recoverSnapshots(pending []pendingOp) {
	resumeFinish := map[string]string{}
	leftovers := map[string]bool{} // snapshots whose COW files in cowDir nobody wants
	for _, p := range pending {
		var err error
		switch p.verb {
		case "snapshot-create", "snapshot-remove", "snapshot-adopt":
			err = d.recoverRemoval(p)
		case "snapshot-merge":
			err = d.startMerge("resume interrupted snapshot merge "+p.name, p.name, state.Op{Verb: "snapshot-merge", Arg: p.name})
			if err == nil {
				err = d.recoverOp(p)
			}
		case "snapshot-merge-finish":
			resumeFinish[p.origin] = p.name
			err = d.recoverOp(p)
		}
		if err != nil {
			d.log.Error("could not finish an interrupted snapshot operation; check the devices", "origin", p.origin, "op", p.verb, "snapshot", p.name, "err", err)
			d.notes.update(p.origin, func(n *note) {
				n.interrupted = fmt.Sprintf("The daemon stopped during `%s %s` and could not finish it at start: %v. Check `daxsnap snapshot list` and the tables.", p.verb, p.name, err)
			})
			continue
		}
		if p.verb != "snapshot-merge" && p.verb != "snapshot-adopt" {
			// The caller of a creation never heard of success; a removal
			// or a finished merge wanted the COW gone.
			leftovers[p.name] = true
		}
		d.log.Warn("finished a snapshot operation the last stop interrupted", "origin", p.origin, "op", p.verb, "snapshot", p.name)
	}
	for _, dev := range d.mgr.List() {
		l := layoutOf(dev.Name())
		if m, ok := d.mergeOf(l); ok {
			if s, ok := d.mergingSnapshot(l, m); ok {
				d.startJob(l.origin, s.name, false)
				delete(resumeFinish, l.origin)
			}
		}
	}
	for origin, name := range resumeFinish {
		d.startJob(origin, name, true)
	}
	d.tidyCOWDir(leftovers)
}

// recoverRemoval removes the snapshot a creation or removal left behind,
// and settles the origin's table for the snapshots that remain.
func (d *Daemon) recoverRemoval(p pendingOp) error {
	l := layoutOf(p.origin)
	unlock := d.lockLayout(l, p.name)
	defer unlock()
	origin, err := d.mgr.Get(l.origin)
	if err != nil {
		return err
	}
	op := fmt.Sprintf("%s %s", p.verb, p.name)
	return d.store.DeviceTransition(l.origin, state.Op{Verb: p.verb, Arg: p.name}, func() error {
		if dev, err := d.mgr.Get(p.name); err == nil {
			if s, ok := d.snapshotOf(dev); ok && s.line.origin == l.realPath() {
				if err := d.removeDevice(dev, true); err != nil {
					return err
				}
			}
		}
		if err := d.quiesceOrigin(op, origin); err != nil {
			return err
		}
		return d.settleOrigin(l, origin)
	}, func() *state.Device { return d.record(origin) })
}

// recoverOp clears a pending op whose work a merge job takes over.
func (d *Daemon) recoverOp(p pendingOp) error {
	origin, err := d.mgr.Get(p.origin)
	if err != nil {
		return err
	}
	unlock := d.locks.lock(p.origin)
	defer unlock()
	return d.store.DeviceTransition(p.origin, state.Op{Verb: p.verb, Arg: p.name}, func() error { return nil },
		func() *state.Device { return d.record(origin) })
}

// guardOfflineMerge refuses to resume an origin, or remove the merge
// device, while a DAX origin merges offline: a write reaching the origin
// then would be overwritten by the merge.
func (d *Daemon) guardOfflineMerge(op, name string) error {
	if m, ok := d.offlineMergeOf(name); ok {
		return errorf(dm.ErrBusy, "%s %s: %s stays suspended while a snapshot merges into it offline on %s (it is DAX-capable, so it cannot load snapshot-merge itself): wait for the merge; `daxsnap snapshot list %s` shows its progress",
			op, name, name, m.dev.Name(), name)
	}
	if origin, ok := strings.CutSuffix(name, mergeSuffix); ok {
		if m, ok := d.offlineMergeOf(origin); ok && m.dev.Name() == name {
			return errorf(dm.ErrBusy, "%s %s: it is merging a snapshot into %s offline: wait for the merge to finish; `daxsnap snapshot list %s` shows its progress",
				op, name, origin, origin)
		}
	}
	return nil
}
