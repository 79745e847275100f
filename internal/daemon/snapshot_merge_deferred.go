package daemon

import (
	"fmt"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// A merge rewrites its origin: whatever caches the origin's data (a file
// system mounted on a loop device over its FUSE file, an NBD client's page
// cache) would then hold blocks of another image, and corrupt it. So a
// merge is refused while the origin, or a device stacked on it, has a user
// (holders.go); DAX mappings of the origin are recalled instead (the
// offline merge does it), and refuse it if they are not given back. The
// snapshot must be unused too. LVM does the same ("Delaying merge since
// origin is open"). With --deferred the merge is recorded on the
// snapshot's state record and starts when the last user closes, or at the
// next start of the daemon, when nothing has the origin open yet.

// inUseError refuses a merge because of users.
type inUseError struct {
	users []devUser
	err   error
}

func (e *inUseError) Error() string { return e.err.Error() }
func (e *inUseError) Unwrap() error { return e.err }

// checkUnused refuses the merge of s into l's origin while users hold the
// origin (or a device over it) or the snapshot.
func (d *Daemon) checkUnused(op string, l originLayout, s snapView, origin *dm.Device) error {
	deferred := fmt.Sprintf("`daxsnap snapshot merge %s --deferred` merges when the last one closes (or at the next start of the daemon)", s.name)
	if users := d.holdersOf(s.dev, true); len(users) > 0 {
		return &inUseError{users: users, err: errorf(dm.ErrBusy,
			"%s: %s is open (%d users: %s): disconnect them first, a merging snapshot cannot be used; or %s",
			op, s.name, len(users), describeUsers(users), deferred)}
	}
	if users := d.holdersOf(origin, false); len(users) > 0 {
		return &inUseError{users: users, err: errorf(dm.ErrBusy,
			"%s: %s is in use: %s. A merge rewrites %s under its users, and a file system or cache over it would be corrupted: let them go and merge again, or %s",
			op, l.origin, describeUsers(users), l.origin, deferred)}
	}
	return nil
}

// deferMerge records that snapshot name merges when its users let go.
func (d *Daemon) deferMerge(op, name string, users []devUser) (wire.Snapshot, error) {
	if err := d.setMergeDeferred(name, true); err != nil {
		return wire.Snapshot{}, fmt.Errorf("%s --deferred: %w", op, err)
	}
	d.log.Info("merge deferred until the last user closes", "snapshot", name, "users", describeUsers(users))
	d.usersChanged() // they may have closed meanwhile
	return d.Snapshot(name)
}

// setMergeDeferred sets or clears the deferral on snapshot name's note
// and state record.
func (d *Daemon) setMergeDeferred(name string, on bool) error {
	unlock := d.locks.lock(name)
	defer unlock()
	dev, err := d.mgr.Get(name)
	if err != nil {
		return errorf(dm.ErrNotFound, "no snapshot called %s", name)
	}
	if d.notes.get(name).mergeDeferred == on {
		return nil
	}
	d.notes.update(name, func(n *note) { n.mergeDeferred = on })
	if rec := d.record(dev); rec != nil {
		if err := d.store.PutDevice(*rec); err != nil {
			d.notes.update(name, func(n *note) { n.mergeDeferred = !on })
			return err
		}
	}
	return nil
}

// watchDeferredMerges starts the deferred merges whose users have let
// go: at once (after a restart nothing holds them), then whenever a user
// closes a device, and every second for the users it does not hear of.
func (d *Daemon) watchDeferredMerges() {
	defer d.merges.wg.Done()
	retry := map[string]deferredTry{}
	for {
		changed := d.userEvents.wait()
		d.startDeferredMerges(retry)
		select {
		case <-changed:
		case <-time.After(time.Second):
		case <-d.merges.ctx.Done():
			return
		}
	}
}

// deferredTry is a deferred merge that failed to start: it is tried
// again after a back-off, and its error logged when it changes.
type deferredTry struct {
	next  time.Time
	wait  time.Duration
	error string
}

// startDeferredMerges starts every deferred merge nothing holds up.
func (d *Daemon) startDeferredMerges(retry map[string]deferredTry) {
	if d.stopping.Load() {
		return // they start at the next start
	}
	for _, s := range d.snapshots() {
		if !d.notes.get(s.name).mergeDeferred || s.origin == "" {
			continue
		}
		if t, ok := retry[s.name]; ok && time.Now().Before(t.next) {
			continue
		}
		origin, err := d.mgr.Get(s.origin)
		if err != nil {
			continue
		}
		if len(d.holdersOf(origin, false)) > 0 || len(d.holdersOf(s.dev, true)) > 0 {
			continue
		}
		op := "snapshot merge " + s.name + " (deferred)"
		if j := d.merges.get(s.origin); j != nil && j.running() && j.name == s.name {
			err = nil // started before a restart
		} else if err = d.startMerge(op, s.name, state.Op{Verb: "snapshot-merge", Arg: s.name}); err == nil {
			d.startJob(s.origin, s.name, false)
		}
		switch {
		case err == nil:
			delete(retry, s.name)
			if err := d.setMergeDeferred(s.name, false); err != nil {
				d.log.Error("deferred merge started, but its record still says deferred", "snapshot", s.name, "err", err)
			}
			d.log.Info("deferred merge started: the last user let go", "snapshot", s.name, "origin", s.origin)
		default: // a mapping not given back, a user back since the check, another merge...
			t := retry[s.name]
			t.wait = min(max(2*t.wait, time.Second), time.Minute)
			t.next = time.Now().Add(t.wait)
			if t.error != err.Error() {
				d.log.Warn("deferred merge cannot start yet; retrying", "snapshot", s.name, "retry_in", t.wait, "err", err)
			}
			t.error = err.Error()
			retry[s.name] = t
		}
	}
}
