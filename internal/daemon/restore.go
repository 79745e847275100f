package daemon

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/state"
)

// restorer brings back, at start, the regions and devices the state file
// records.
type restorer struct {
	log     *slog.Logger
	store   *state.Store
	mgr     *dm.Manager
	devs    *devStates
	regions *pmem.Manager
	snaps   *snapshots.Manager
	// record is how the state file keeps a device (records.go).
	record func(*dm.Device) *state.Device
	// cks restores checkpointed volumes whose memory is gone
	// (checkpoint_restore.go).
	cks *ckRestore
}

// restore rebuilds regions and devices from the state file. Operations
// that were in flight when the daemon stopped are finished or undone
// first; then every device comes back in dependency order. Only a state
// file that cannot be read stops the start; a device that cannot come
// back as recorded comes back degraded.
func (rs *restorer) restore() error {
	rs.reportMisfiled()
	if err := rs.regions.Restore(); err != nil {
		return err
	}
	recs, err := rs.store.Devices()
	if err != nil {
		return err
	}
	var keep []state.Device
	var pending []snapshots.Pending
	for _, rec := range recs {
		if p, ok := snapshots.ParseOp(rec.Name, rec.Op); ok {
			// The snapshot verbs finish or undo it below, with every
			// device back; the op stays recorded until they have.
			pending = append(pending, p)
			rec.Op = state.Op{}
		}
		if rec, ok := rs.settle(rec); ok {
			keep = append(keep, rec)
		}
	}
	rs.cks.prepare(keep)
	rs.restoreDevices(keep)
	rs.cks.fill()
	rs.snaps.Recover(pending)
	return nil
}

// settle resolves an operation the last daemon stopped in the middle of:
// an unfinished create or remove (or a deferred removal, which nothing
// holds open any more) drops the device; any other operation leaves the
// device as recorded before it, with a note.
func (rs *restorer) settle(rec state.Device) (state.Device, bool) {
	if rec.Op.Verb == "create" || rec.Op.Verb == "remove" || rec.DeferredRemove {
		if err := rs.store.DeleteDevice(rec.Name); err != nil {
			rs.log.Error("drop record", "device", rec.Name, "err", err)
		}
		rs.log.Warn("device not restored: its creation or removal was under way at the last stop", "device", rec.Name, "op", rec.Op)
		return rec, false
	}
	if !rec.Op.IsZero() {
		cleared := rec
		cleared.Op = state.Op{}
		if err := rs.store.PutDevice(cleared); err != nil {
			rs.log.Error("clear interrupted operation", "device", rec.Name, "err", err)
		}
		rs.log.Warn("operation was interrupted by the last stop; state before it restored", "device", rec.Name, "op", rec.Op)
	}
	// rec.Op, if any, is for createRestored to note on the device.
	return rec, true
}

// restoring is a device on its way back at start.
type restoring struct {
	rec      state.Device
	dev      *dm.Device
	liveDone bool // its live table is back (or `error` in its place)
}

// restoreDevices brings the recorded devices back, each after the devices
// its tables stack on. dm says which those are as the tables load: a line
// over a device that has no live table yet fails with a StackError naming
// it, and the device waits for that one to come back. Devices left waiting
// for one another (a loop, which loads never allow) come back in name
// order, as far as their tables load.
func (rs *restorer) restoreDevices(recs []state.Device) {
	back := map[string]bool{} // restored, or never coming (not created)
	waiting := map[string][]*restoring{}
	var bring func(r *restoring, force bool)
	bring = func(r *restoring, force bool) {
		waitFor := func(err error) string {
			var se *dm.StackError
			if force || !errors.As(err, &se) || !se.NoTable || back[se.Name] {
				return ""
			}
			return se.Name
		}
		if w := rs.restoreTables(r, waitFor); w != "" {
			waiting[w] = append(waiting[w], r)
			return
		}
		back[r.rec.Name] = true
		next := waiting[r.rec.Name]
		delete(waiting, r.rec.Name)
		for _, w := range next {
			bring(w, false)
		}
	}
	var all []*restoring
	// Devices with a recorded number first, so that one recorded without
	// (an older state file) takes none of theirs.
	recs = slices.Clone(recs)
	slices.SortStableFunc(recs, func(a, b state.Device) int {
		return cmp.Compare(b2i(a.Number == nil), b2i(b.Number == nil))
	})
	for _, rec := range recs {
		if dev := rs.createRestored(rec); dev != nil {
			all = append(all, &restoring{rec: rec, dev: dev})
		} else {
			back[rec.Name] = true
		}
	}
	for _, r := range all {
		bring(r, false)
	}
	for len(waiting) > 0 {
		var first *restoring
		var from string
		for w, rs := range waiting {
			for _, r := range rs {
				if first == nil || r.rec.Name < first.rec.Name {
					first, from = r, w
				}
			}
		}
		if waiting[from] = slices.DeleteFunc(waiting[from], func(r *restoring) bool { return r == first }); len(waiting[from]) == 0 {
			delete(waiting, from)
		}
		bring(first, true)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// createRestored creates the device of rec, with no table yet, and its
// daemon state; nil if it cannot be created.
func (rs *restorer) createRestored(rec state.Device) *dm.Device {
	opts := dm.CreateOptions{UUID: rec.UUID, ReadOnly: rec.ReadOnly}
	if rec.Number != nil {
		opts.Persistent, opts.Number = true, *rec.Number
	}
	dev, err := rs.mgr.Create(rec.Name, opts)
	if err != nil {
		rs.log.Error("device not restored", "device", rec.Name, "err", err)
		return nil
	}
	owner, problem := restoredOwner(rec)
	rs.devs.setOwner(dev, owner)
	if !rec.Op.IsZero() { // settle cleared it in the state file
		rs.devs.updateNote(rec.Name, func(n *note) {
			n.interrupted = fmt.Sprintf("The daemon stopped during `%s`; the device is as it was before it: check it and repeat the operation if needed.", rec.Op)
		})
	}
	rs.snaps.RestoreAutoextend(dev, rec)
	if problem != "" {
		rs.devs.updateNote(rec.Name, func(n *note) { n.record = problem })
		rs.log.Error("recorded owner is not valid; the device has the default owner", "device", rec.Name,
			"uid", rec.Owner.UID, "gid", rec.Owner.GID, "mode", fmt.Sprintf("%#o", rec.Owner.Mode))
	}
	if rec.MergeDeferred {
		rs.devs.updateNote(rec.Name, func(n *note) { n.mergeDeferred = true })
	}
	return dev
}

// restoreTables brings r's tables back: live table (or `error` in its
// place), inactive table, suspension. When a table waits for another
// device (waitFor names it), it returns that device's name, and is
// called again once that device is back.
func (rs *restorer) restoreTables(r *restoring, waitFor func(error) string) (wait string) {
	rec, dev := r.rec, r.dev
	if rec.Live != "" && !r.liveDone {
		wait, err := rs.restoreLive(dev, rec, waitFor)
		if wait != "" {
			return wait
		}
		if err != nil {
			rs.log.Error("device restored without a table", "device", rec.Name, "err", err)
		}
	}
	r.liveDone = true
	if rec.Inactive != "" {
		err := error(nil)
		if lost := rs.snaps.HeaderLost(rec.Inactive); lost != "" {
			err = errors.New(strings.ReplaceAll(lost, "NAME", rec.Name))
		} else {
			err = dev.Load(rec.Inactive)
		}
		if w := waitFor(err); w != "" {
			return w
		}
		if err != nil {
			rs.devs.updateNote(rec.Name, func(n *note) {
				n.interrupted += fmt.Sprintf(" Its inactive table did not load at start (%v) and was dropped.", err)
			})
			rs.log.Warn("inactive table dropped", "device", rec.Name, "err", err)
			if r := rs.record(dev); r != nil {
				rs.store.PutDevice(*r)
			}
		}
	}
	if rec.Suspended {
		dev.Suspend(dm.SuspendOptions{})
	}
	rs.log.Info("device restored", "device", rec.Name, "suspended", rec.Suspended, "note", rs.devs.note(dev).String())
	return ""
}

// restoreLive loads and resumes the recorded live table; if it does not
// load, an `error` table of the recorded size takes its place and the
// recorded table is kept for the next start.
// The load may wait for another device instead (see restoreTables).
func (rs *restorer) restoreLive(dev *dm.Device, rec state.Device, waitFor func(error) string) (wait string, _ error) {
	lost := snapshots.LostOnRestart(rec.Live)
	if lost == "" {
		lost = rs.snaps.HeaderLost(rec.Live)
	}
	lost = strings.ReplaceAll(lost, "NAME", rec.Name)
	var err error
	if lost == "" {
		if err = dev.Load(rec.Live); err == nil {
			return "", dev.Resume()
		}
		if w := waitFor(err); w != "" {
			return w, nil
		}
	}
	size, perr := tableSize(rec.Live)
	if perr != nil {
		return "", fmt.Errorf("recorded table is unreadable (%v) and did not load: %w", perr, err)
	}
	rs.devs.updateNote(rec.Name, func(n *note) {
		n.keptLive = rec.Live
		n.degraded = fmt.Sprintf("Its table did not load when the daemon started: %v. It serves an `error` table of %d sectors instead: all I/O fails. The recorded table is kept: bring back what it maps and restart `daxsnap serve`, or load a new table.", err, size)
		if lost != "" {
			n.degraded = lost
		}
	})
	rs.log.Error("table did not load; serving an error table instead", "device", rec.Name, "sectors", size, "err", err, "lost", lost)
	if err := dev.Load(fmt.Sprintf("0 %d error", size)); err != nil {
		return "", err
	}
	return "", dev.Resume()
}

// tableSize is the number of sectors a table text maps.
func tableSize(text string) (dm.Sector, error) {
	lines, err := dm.ParseTable(text)
	if err != nil {
		return 0, err
	}
	last := lines[len(lines)-1]
	return last.Start + last.Len, nil
}
