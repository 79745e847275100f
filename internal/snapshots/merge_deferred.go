package snapshots

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
// (the Host's Holders); DAX mappings of the origin are recalled instead (the
// offline merge does it), and refuse it if they are not given back. The
// snapshot must be unused too. LVM does the same ("Delaying merge since
// origin is open"). With --deferred the merge is recorded on the
// snapshot's state record and starts when the last user closes, or at the
// next start of the daemon, when nothing has the origin open yet.

// checkUnused refuses the merge of s into l's origin while users hold the
// origin (or a device over it) or the snapshot.
func (mg *Manager) checkUnused(op string, l originLayout, s snapView, origin *dm.Device) error {
	deferred := fmt.Sprintf("`daxsnap snapshot merge %s --deferred` merges when the last one closes (or at the next start of the daemon)", s.name)
	if users := mg.host.Holders(s.dev, OpenersAndMaps); users.Len() > 0 {
		return &InUseError{Users: users, Err: errorf(dm.ErrBusy,
			"%s: %s is open (%d users: %s): disconnect them first, a merging snapshot cannot be used; or %s",
			op, s.name, users.Len(), users, deferred)}
	}
	if users := mg.host.Holders(origin, Openers); users.Len() > 0 {
		return &InUseError{Users: users, Err: errorf(dm.ErrBusy,
			"%s: %s is in use: %s. A merge rewrites %s under its users, and a file system or cache over it would be corrupted: let them go and merge again, or %s",
			op, l.origin, users, l.origin, deferred)}
	}
	return nil
}

// deferMerge records that snapshot name merges when its users let go.
func (mg *Manager) deferMerge(op, name string, users Users) (wire.Snapshot, error) {
	if err := mg.setMergeDeferred(name, true); err != nil {
		return wire.Snapshot{}, fmt.Errorf("%s --deferred: %w", op, err)
	}
	mg.log.Info("merge deferred until the last user closes", "snapshot", name, "users", users.String())
	mg.kickDeferred() // they may have closed meanwhile
	return mg.Snapshot(name)
}

// setMergeDeferred sets or clears the deferral on snapshot name's note
// and state record.
func (mg *Manager) setMergeDeferred(name string, on bool) error {
	unlock := mg.host.Lock(name)
	defer unlock()
	dev, err := mg.devs.Get(name)
	if err != nil {
		return errorf(dm.ErrNotFound, "no snapshot called %s", name)
	}
	if mg.host.Note(name).MergeDeferred == on {
		return nil
	}
	mg.host.SetMergeDeferred(name, on)
	if rec := mg.host.Record(dev); rec != nil {
		if err := mg.store.PutDevice(*rec); err != nil {
			mg.host.SetMergeDeferred(name, !on)
			return err
		}
	}
	return nil
}

// watchDeferredMerges starts the deferred merges whose users have let
// go: at once (after a restart nothing holds them), then whenever a user
// closes a device, and every second for the users it does not hear of.
func (mg *Manager) watchDeferredMerges() {
	defer mg.merges.wg.Done()
	retry := map[string]deferredTry{}
	for {
		changed := mg.host.UserEvents()
		mg.startDeferredMerges(retry)
		select {
		case <-changed:
		case <-mg.kick:
		case <-time.After(time.Second):
		case <-mg.merges.ctx.Done():
			return
		}
	}
}

// kickDeferred has the watcher look at the deferred merges again.
func (mg *Manager) kickDeferred() {
	select {
	case mg.kick <- struct{}{}:
	default: // it will look anyway
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
func (mg *Manager) startDeferredMerges(retry map[string]deferredTry) {
	if mg.host.RefuseWhileStopping("start deferred merges") != nil {
		return // they start at the next start
	}
	for _, s := range mg.snapshots() {
		if !mg.host.Note(s.name).MergeDeferred || s.origin == "" {
			continue
		}
		if t, ok := retry[s.name]; ok && time.Now().Before(t.next) {
			continue
		}
		origin, err := mg.devs.Get(s.origin)
		if err != nil {
			continue
		}
		if mg.host.Holders(origin, Openers).Len() > 0 || mg.host.Holders(s.dev, OpenersAndMaps).Len() > 0 {
			continue
		}
		op := "snapshot merge " + s.name + " (deferred)"
		if j := mg.merges.get(s.origin); j != nil && j.running() && j.name == s.name {
			err = nil // started before a restart
		} else if err = mg.startMerge(op, s.name, state.Op{Verb: "snapshot-merge", Arg: s.name}); err == nil {
			mg.startJob(s.origin, s.name, mergeRunning)
		}
		switch {
		case err == nil:
			delete(retry, s.name)
			if err := mg.setMergeDeferred(s.name, false); err != nil {
				mg.log.Error("deferred merge started, but its record still says deferred", "snapshot", s.name, "err", err)
			}
			mg.log.Info("deferred merge started: the last user let go", "snapshot", s.name, "origin", s.origin)
		default: // a mapping not given back, a user back since the check, another merge...
			t := retry[s.name]
			t.wait = min(max(2*t.wait, time.Second), time.Minute)
			t.next = time.Now().Add(t.wait)
			if t.error != err.Error() {
				mg.log.Warn("deferred merge cannot start yet; retrying", "snapshot", s.name, "retry_in", t.wait, "err", err)
			}
			t.error = err.Error()
			retry[s.name] = t
		}
	}
}
