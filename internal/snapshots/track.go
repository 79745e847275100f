package snapshots

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Changed-block tracking (docs/backup.md): a snapshot's exceptions are
// the origin chunks written since it was taken, in order (see the
// snapshot target's track.go). So the origin's changes since snapshot A
// are A's exceptions, and the changes between A and a newer snapshot B
// are the exceptions A had when B was activated: B's mark of A, which
// takeMarks counts while the origin is suspended for B's activation and
// putMarks stores in the state file once it runs again, before B's
// creation is recorded: a kill -9 before then removes B at start (the
// origin's record still names the creation), so the marks of every
// snapshot that survives are exact.

// newTrackingID returns a fresh snapshot identity for the marks.
func newTrackingID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// takeMarks counts, for the snapshot snapDev being activated on p's
// origin (which is suspended: no origin write is in flight, none
// starts), how many exceptions every older snapshot of the origin has:
// the records putMarks stores once the origin runs again. An older
// snapshot without a record (taken before tracking) gets one, without
// marks of its own. An adopted COW gets no marks: its point in time is
// older than the others'.
func (mg *Manager) takeMarks(p createPlan, snapDev *dm.Device) ([]state.Tracking, error) {
	self, ok := mg.snapshotOf(snapDev)
	if !ok {
		return nil, fmt.Errorf("record changed-block tracking marks: %s's table is not a snapshot line", p.name)
	}
	now := time.Now().UTC()
	tr, err := snapshot.TrackedOf(snapDev)
	if err != nil {
		return nil, fmt.Errorf("record changed-block tracking marks: %w", err)
	}
	rec := mg.newTracking(self, tr, now)
	if !p.adopt {
		rec.Marks = map[string]int{}
	}
	var recs []state.Tracking
	for _, s := range mg.snapshotsOf(p.l) {
		if s.name == p.name || s.degraded || p.adopt {
			continue
		}
		t, err := snapshot.TrackedOf(s.dev)
		if err != nil || t.State == snapshot.Invalid || t.Merging {
			continue // no diff from it is ever answered
		}
		old, ok, err := mg.store.Tracking(s.line.COW)
		if err != nil {
			return nil, fmt.Errorf("record changed-block tracking marks: %w", err)
		}
		if !ok || old.Origin == "" {
			written := ok && old.Written // a write hook's record
			old = mg.newTracking(s, t, now)
			old.Written = old.Written || written
			recs = append(recs, old)
		}
		rec.Marks[old.ID] = t.Count
	}
	return append(recs, rec), nil
}

// putMarks stores the records takeMarks made, durably, keeping the
// write hook's note (noteWritten) of a snapshot written since.
func (mg *Manager) putMarks(recs []state.Tracking) error {
	for i := range recs {
		now, ok, err := mg.store.Tracking(recs[i].COW)
		if err != nil {
			return fmt.Errorf("record changed-block tracking marks: %w", err)
		}
		recs[i].Written = recs[i].Written || ok && now.Written
	}
	if err := mg.store.PutTrackings(recs...); err != nil {
		return fmt.Errorf("record changed-block tracking marks: %w", err)
	}
	return nil
}

// newTracking is a fresh record for snapshot s, without marks.
func (mg *Manager) newTracking(s snapView, t snapshot.Tracked, now time.Time) state.Tracking {
	rec := state.Tracking{COW: s.line.COW, ID: newTrackingID(), Origin: s.origin, Created: now,
		Transient: t.Transient, Written: t.Written}
	if t.Transient {
		rec.Run = mg.run
	}
	return rec
}

// noteWritten is the snapshot target's write hook: the first write to a
// snapshot itself in each run is recorded before it happens. It runs in
// the write's path, so it asks nothing of the devices (whose locks the
// caller may be under): a snapshot without a record gets one that says
// only this, which putMarks keeps when it fills the rest in.
func (mg *Manager) noteWritten(cow string) error {
	rec, ok, err := mg.store.Tracking(cow)
	if err != nil {
		return err
	}
	if ok && rec.Written {
		return nil
	}
	if !ok {
		rec = state.Tracking{COW: cow, ID: newTrackingID(), Created: time.Now().UTC(), Run: mg.run}
	}
	rec.Written = true
	return mg.store.PutTrackings(rec)
}

// forgetTracking drops the record of the snapshot on cow, which is gone.
func (mg *Manager) forgetTracking(cow string) {
	if err := mg.store.DeleteTracking(cow); err != nil {
		mg.log.Warn("could not forget the changed-block tracking of a removed snapshot", "cow", cow, "err", err)
	}
}

// tracked is a snapshot a diff reads: its target's view and its record.
type tracked struct {
	snapView
	t      snapshot.Tracked
	rec    state.Tracking
	hasRec bool
}

// trackedSnapshot finds snapshot name and refuses one whose exceptions
// do not say what changed.
func (mg *Manager) trackedSnapshot(op, name string) (tracked, error) {
	s, err := mg.findSnapshot(op, name)
	if err != nil {
		return tracked{}, err
	}
	if err := s.managed(op); err != nil {
		return tracked{}, err
	}
	if s.degraded {
		return tracked{}, errorf(dm.ErrNoTable, "%s: %s serves an `error` table because its own did not load: %s", op, name, mg.host.Note(name).Text)
	}
	t, err := snapshot.TrackedOf(s.dev)
	if err != nil {
		return tracked{}, errorf(dm.ErrInvalidArgument, "%s: %v", op, err)
	}
	switch {
	case t.Merging:
		return tracked{}, errorf(dm.ErrBusy, "%s: %s is merging into %s: its exceptions are being copied back and no longer say what changed", op, name, s.origin)
	case t.State == snapshot.Invalid:
		return tracked{}, errorf(dm.ErrIO, "%s: %s is invalid (its COW filled up or failed): what changed since it is lost; take a new full backup from a new snapshot", op, name)
	}
	if m, ok := mg.mergeOf(s.layout()); ok && sameFile(m.line.COW, s.line.COW) {
		return tracked{}, errorf(dm.ErrBusy, "%s: %s is merging into %s: its exceptions are being copied back and no longer say what changed", op, name, s.origin)
	}
	rec, ok, err := mg.store.Tracking(s.line.COW)
	if err != nil {
		return tracked{}, err
	}
	if ok && rec.Origin == "" {
		// Only the write hook's: no identity marks name yet, but a
		// write is a write. (Origin is not compared otherwise: a
		// renamed origin keeps its snapshots' marks.)
		t.Written = t.Written || rec.Written
		ok = false
	}
	if t.Transient && (!ok || rec.Run != mg.run) {
		return tracked{}, errorf(dm.ErrInvalidArgument, "%s: %s is transient (store N): its exceptions lived in a daemon that has stopped since, so what changed is not known; use persistent snapshots for incremental backups", op, name)
	}
	return tracked{snapView: s, t: t, rec: rec, hasRec: ok}, nil
}

// SnapshotDiff answers which chunks changed from snapshot req.From to
// req.To: a newer snapshot of the same origin, or the live origin ("" or
// its name). See wire.SnapshotDiff.
func (mg *Manager) SnapshotDiff(req wire.SnapshotDiffRequest) (wire.SnapshotDiff, error) {
	op := fmt.Sprintf("snapshot diff %s %s", req.From, req.To)
	if req.From == "" {
		return wire.SnapshotDiff{}, errorf(dm.ErrInvalidArgument, "snapshot diff: no snapshot given: name the older snapshot, then the newer one or the origin")
	}
	a, err := mg.trackedSnapshot(op, req.From)
	if err != nil {
		return wire.SnapshotDiff{}, err
	}
	out := wire.SnapshotDiff{From: a.name, To: req.To, Origin: a.origin, Size: a.dev.Info().Size.Bytes(), Extents: []wire.Extent{}}
	if req.To == "" || req.To == a.origin {
		out.To = a.origin
		chunks, cb, err := snapshot.Changes(a.dev, -1)
		if err != nil {
			return wire.SnapshotDiff{}, errorf(dm.ErrIO, "%s: %v", op, err)
		}
		return fillDiff(out, chunks, cb), nil
	}
	b, err := mg.trackedSnapshot(op, req.To)
	if err != nil {
		return wire.SnapshotDiff{}, err
	}
	if b.origin != a.origin {
		return wire.SnapshotDiff{}, errorf(dm.ErrInvalidArgument, "%s: %s is a snapshot of %s and %s of %s: a diff compares two snapshots of one origin", op, a.name, a.origin, b.name, b.origin)
	}
	out.ChunkSize = a.t.ChunkBytes
	if a.name == b.name {
		return out, nil
	}
	for _, s := range []tracked{a, b} {
		if s.t.Written || s.hasRec && s.rec.Written {
			return wire.SnapshotDiff{}, errorf(dm.ErrInvalidArgument, "%s: %s was written to directly (not through %s): its own changes are not told apart from the origin's, so what differs between %s and %s is not known; diff each against the origin instead (`daxsnap snapshot diff %s`)",
				op, s.name, a.origin, a.name, b.name, s.name)
		}
	}
	mark, ok := 0, false
	if a.hasRec && b.hasRec {
		mark, ok = b.rec.Marks[a.rec.ID]
		if !ok {
			if _, newer := a.rec.Marks[b.rec.ID]; newer {
				return wire.SnapshotDiff{}, errorf(dm.ErrInvalidArgument, "%s: %s was taken after %s: give the older snapshot first (`daxsnap snapshot diff %s %s`)", op, a.name, b.name, b.name, a.name)
			}
		}
	}
	if !ok {
		why := fmt.Sprintf("%s has no record of what %s held when it was taken (it was taken before daxsnap tracked changes, adopted, set up by hand, or before %s)", b.name, a.name, a.name)
		if !req.Full {
			return wire.SnapshotDiff{}, errorf(dm.ErrInvalidArgument, "%s: what changed is not known: %s; ask for the whole device with --full (a full backup), or diff against the origin", op, why)
		}
		out.Full, out.Why = true, why
		out.Extents = []wire.Extent{{Off: 0, Len: out.Size}}
		out.Changed = out.Size
		return out, nil
	}
	chunks, cb, err := snapshot.Changes(a.dev, mark)
	if err != nil {
		return wire.SnapshotDiff{}, errorf(dm.ErrIO, "%s: %v", op, err)
	}
	return fillDiff(out, chunks, cb), nil
}

// fillDiff turns sorted chunks of cb bytes into merged extents of out,
// clipped to out.Size.
func fillDiff(out wire.SnapshotDiff, chunks []exstore.Chunk, cb int64) wire.SnapshotDiff {
	out.ChunkSize = cb
	for _, c := range chunks {
		off := int64(c) * cb
		n := min(cb, out.Size-off)
		if n <= 0 {
			continue
		}
		if k := len(out.Extents); k > 0 && out.Extents[k-1].Off+out.Extents[k-1].Len == off {
			out.Extents[k-1].Len += n
		} else {
			out.Extents = append(out.Extents, wire.Extent{Off: off, Len: n})
		}
		out.Changed += n
	}
	return out
}
