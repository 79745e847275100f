package snapshots

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Merging (lvconvert --merge). A non-DAX origin merges online: its table
// becomes snapshot-merge, which copies the snapshot's exceptions back while
// the origin stays usable. A DAX (or sync) origin cannot load
// snapshot-merge, which has no direct access: the capability rule refuses
// it. It merges offline instead: the origin stays suspended (its I/O waits,
// its DAX capability never changes) while a new device, ORIGIN-merge, runs
// the snapshot-merge table. Either way a background job waits until the
// status says the merge is done (allocated == metadata), then removes the
// snapshot, gives the origin its snapshot-origin (or, with no snapshots
// left, ORIGIN-real's) table, and resumes it. The tables say what is in
// progress, so after a restart the merge resumes and the job finishes it.

// mergeJob drives one merge to its end.
type mergeJob struct {
	origin, name string
	// resumeFinish: the last daemon stopped while finishing, so a missing
	// merge device means the copying was done.
	resumeFinish bool
	done         chan struct{}

	mu    sync.Mutex
	start uint64 // exceptions left when the job began
	seen  bool
	err   error
}

func (j *mergeJob) observe(remaining uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.seen {
		j.start, j.seen = remaining, true
	}
}

func (j *mergeJob) result() (start uint64, seen bool, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.start, j.seen, j.err
}

func (j *mergeJob) running() bool {
	select {
	case <-j.done:
		return false
	default:
		return true
	}
}

// mergeJobs are the jobs by origin; ctx ends when the daemon stops.
type mergeJobs struct {
	mu       sync.Mutex
	byOrigin map[string]*mergeJob
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

func newMergeJobs() *mergeJobs {
	ctx, cancel := context.WithCancel(context.Background())
	return &mergeJobs{byOrigin: map[string]*mergeJob{}, ctx: ctx, cancel: cancel}
}

func (m *mergeJobs) get(origin string) *mergeJob {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byOrigin[origin]
}

// named returns the job merging snapshot name, if any.
func (m *mergeJobs) named(name string) *mergeJob {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, j := range m.byOrigin {
		if j.name == name {
			return j
		}
	}
	return nil
}

// stop cancels every job's waiting and waits for the jobs to return.
func (m *mergeJobs) stop() {
	m.cancel()
	m.wg.Wait()
}

// errStopping: the daemon stops before the merge finished.
var errStopping = errors.New("the daemon is stopping")

// jobStart says what a merge job starts from.
type jobStart int

const (
	mergeRunning  jobStart = iota // a merge target is (or will be) live
	finishResumed                 // the last daemon stopped while finishing (see resumeFinish)
)

// startJob starts the job finishing the merge on origin, or returns the
// one already running.
func (mg *Manager) startJob(origin, name string, from jobStart) *mergeJob {
	m := mg.merges
	m.mu.Lock()
	defer m.mu.Unlock()
	if j := m.byOrigin[origin]; j != nil && j.running() {
		return j
	}
	j := &mergeJob{origin: origin, name: name, resumeFinish: from == finishResumed, done: make(chan struct{})}
	m.byOrigin[origin] = j
	if m.ctx.Err() != nil {
		j.err = errStopping
		close(j.done)
		return j
	}
	m.wg.Add(1)
	go mg.runMerge(j)
	return j
}

func (mg *Manager) runMerge(j *mergeJob) {
	defer mg.merges.wg.Done()
	err := mg.waitMerged(j)
	if err == nil {
		err = mg.finishMerge(j)
	}
	switch {
	case err == nil:
		mg.log.Info("snapshot merged", "snapshot", j.name, "origin", j.origin)
	case errors.Is(err, errStopping):
		mg.log.Info("merge continues at the next start", "snapshot", j.name, "origin", j.origin)
	default:
		mg.log.Error("merge did not finish", "snapshot", j.name, "origin", j.origin, "err", err)
	}
	j.mu.Lock()
	j.err = err
	j.mu.Unlock()
	close(j.done)
}

// SnapshotMerge merges a persistent snapshot back into its origin. It
// waits until the merge has finished, unless req.NoWait. While the origin
// is in use it refuses, or with req.Deferred records the merge to start
// when the last user closes (see startDeferredMerges). The wait ends
// early with ctx's error if ctx ends first; the merge goes on.
func (mg *Manager) SnapshotMerge(ctx context.Context, name string, req wire.SnapshotMerge) (wire.Snapshot, error) {
	op := "snapshot merge " + name
	s, err := mg.findSnapshot(op, name)
	if err != nil {
		return mg.orFinished(ctx, name, err)
	}
	if err := s.managed(op); err != nil {
		return wire.Snapshot{}, err
	}
	j := mg.merges.get(s.origin)
	if j == nil || !j.running() || j.name != name {
		if err := mg.host.RefuseWhileStopping(op); err != nil {
			return wire.Snapshot{}, err
		}
		err := mg.startMerge(op, name, state.Op{Verb: "snapshot-merge", Arg: name})
		var inUse *InUseError
		if errors.As(err, &inUse) && req.Deferred {
			return mg.deferMerge(op, name, inUse.Users)
		}
		if err != nil {
			// The merge may have finished since findSnapshot.
			return mg.orFinished(ctx, name, err)
		}
		// Before the job starts, which takes the snapshot's lock to
		// finish: the wait below must not queue behind the finish.
		mg.setMergeDeferred(name, false)
		j = mg.startJob(s.origin, name, mergeRunning)
	}
	if req.NoWait {
		snap, err := mg.Snapshot(name)
		if err != nil {
			return mg.orFinished(ctx, name, err)
		}
		return snap, nil
	}
	if err := wait(ctx, j); err != nil {
		return wire.Snapshot{}, fmt.Errorf("%s: stopped waiting: %w; the merge goes on in the daemon: `daxsnap snapshot list %s` shows its progress",
			op, err, s.origin)
	}
	if _, _, err := j.result(); err != nil {
		if errors.Is(err, errStopping) {
			return wire.Snapshot{}, errorf(dm.ErrBusy, "%s: the daemon stopped before the merge finished; it resumes when `daxsnap serve` starts again: run `daxsnap snapshot merge %s` then to wait for it", op, name)
		}
		return wire.Snapshot{}, fmt.Errorf("%s: %w", op, err)
	}
	r := wire.Snapshot{Name: name, Origin: s.origin, COW: s.line.COW, COWOwned: mg.ownsCOW(s.line.COW),
		Store: s.line.Store.String(), ChunkSize: s.line.Chunk.Bytes(), Sectors: uint64(s.line.size), State: wire.SnapshotMerged}
	if m, ok, _ := mg.store.Merge(name); ok {
		r.MergedAt = m.FinishedAt
	}
	return r, nil
}

// wait waits for j to end (a stopping daemon ends it soon), or for ctx
// to end, with ctx's error: j goes on.
func wait(ctx context.Context, j *mergeJob) error {
	select {
	case <-j.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// orFinished answers a snapshot merge of name that failed with err: a
// snapshot that is gone because its merge finished (a client waiting on a
// merge it started with --no-wait) is reported merged, as the record the
// finish left says; anything else returns err. A job of this daemon still
// finishing the merge is waited for first.
func (mg *Manager) orFinished(ctx context.Context, name string, err error) (wire.Snapshot, error) {
	if !errors.Is(err, dm.ErrNotFound) {
		return wire.Snapshot{}, err
	}
	if _, gerr := mg.devs.Get(name); gerr == nil {
		return wire.Snapshot{}, err
	}
	if j := mg.merges.named(name); j != nil {
		if werr := wait(ctx, j); werr != nil {
			return wire.Snapshot{}, fmt.Errorf("snapshot merge %s: stopped waiting: %w", name, werr)
		}
	}
	m, ok, serr := mg.store.Merge(name)
	if serr != nil {
		return wire.Snapshot{}, errors.Join(err, serr)
	}
	if !ok {
		return wire.Snapshot{}, err
	}
	return wire.Snapshot{Name: name, Origin: m.Origin, State: wire.SnapshotMerged, MergedAt: m.FinishedAt,
		Note: "the merge had finished at " + m.FinishedAt.Format(time.RFC3339)}, nil
}

// startMerge hands the snapshot to a snapshot-merge table (as a state
// transition recorded as op on the origin). A merge of this snapshot
// already under way is left as it is.
func (mg *Manager) startMerge(op, name string, recOp state.Op) error {
	s, err := mg.findSnapshot(op, name)
	if err != nil {
		return err
	}
	l := s.layout()
	unlock := mg.lockLayout(l, name)
	defer unlock()
	if s, err = mg.findSnapshot(op, name); err != nil {
		return err
	}
	if err := s.managed(op); err != nil {
		return err
	}
	origin, err := mg.devs.Get(l.origin)
	if err != nil {
		return errorf(dm.ErrNotFound, "%s: its origin %s is gone", op, l.origin)
	}
	m, merging := mg.mergeOf(l)
	if merging && sameFile(m.line.COW, s.line.COW) {
		return mg.holdForOfflineMerge(op, recOp, l, m, origin)
	}
	// What the snapshot is decides before what its origin is doing, so
	// the answer does not depend on when it is asked.
	if err := mg.checkSnapshotMergeable(op, s); err != nil {
		return err
	}
	if merging {
		other, _ := mg.mergingSnapshot(l, m)
		return errorf(dm.ErrBusy, "%s: snapshot %s is merging into %s: wait for it to finish first", op, other.name, l.origin)
	}
	if img := mg.host.CheckpointImage(origin); img != "" {
		// The merge writes ORIGIN-real, below the device whose writes
		// the checkpoints track, while a checkpoint may be reading the
		// memory: the image would miss the merge (a restore after a
		// reboot would lose it), or hold half of it.
		return errorf(dm.ErrBusy, "%s: %s is checkpointed to %s, and its checkpoints cannot follow a merge: `daxsnap checkpoint disable %s` first, merge, then enable its checkpoints again (the first one then writes the whole volume)",
			op, l.origin, img, l.origin)
	}
	how := onlineMerge
	if origin.Info().FixedCaps&(dm.DAX|dm.Sync) != 0 {
		how = offlineMerge
	}
	if err := mg.checkMergeable(op, l, s, origin, how); err != nil {
		return err
	}
	if err := mg.checkUnused(op, l, s, origin); err != nil {
		return err
	}
	err = mg.store.DeviceTransition(l.origin, recOp, func() error { return mg.doStartMerge(op, l, s, origin, how) },
		func() *state.Device { return mg.host.Record(origin) })
	if err != nil {
		return err
	}
	mg.log.Info("merge started", "snapshot", name, "origin", l.origin, "offline", how == offlineMerge)
	return nil
}

// holdForOfflineMerge makes sure the origin of a running offline merge
// is suspended: after a restart interrupted the merge's start, it came
// back resumed.
func (mg *Manager) holdForOfflineMerge(op string, recOp state.Op, l originLayout, m mergeView, origin *dm.Device) error {
	if !m.offline || origin.Info().Suspended {
		return nil
	}
	return mg.store.DeviceTransition(l.origin, recOp, func() error { return mg.quiesceOrigin(op, origin) },
		func() *state.Device { return mg.host.Record(origin) })
}

// checkSnapshotMergeable refuses a snapshot that can never merge.
func (mg *Manager) checkSnapshotMergeable(op string, s snapView) error {
	switch st := usageOf(s.dev).state; {
	case s.line.Store == exstore.Transient:
		return errorf(dm.ErrNotSupported, "%s: %s is a transient snapshot (store N), whose exceptions live only in memory: it cannot merge; copy its data instead", op, s.name)
	case s.degraded:
		return errorf(dm.ErrNoTable, "%s: %s serves an `error` table (%s): nothing to merge", op, s.name, mg.host.Note(s.name).Degraded)
	case st == wire.SnapshotInvalid:
		return errorf(dm.ErrIO, "%s: %s is invalid (its COW filled up or failed), so its contents are lost: remove it (`daxsnap snapshot remove %s`)", op, s.name, s.name)
	}
	return nil
}

// mergeMode is how a merge runs: DAX-capable origins merge offline,
// through ORIGIN-merge, while they stay suspended (their memory may be
// mapped, so they cannot take snapshot-merge's table).
type mergeMode int

const (
	onlineMerge  mergeMode = iota // snapshot-merge loaded into the origin
	offlineMerge                  // ORIGIN-merge, the origin suspended
)

// checkMergeable refuses what cannot merge now.
func (mg *Manager) checkMergeable(op string, l originLayout, s snapView, origin *dm.Device, how mergeMode) error {
	in := origin.Info()
	switch {
	case s.dev.Info().OpenCount > 0 && mg.host.Holders(s.dev, OpenersAndMaps).Len() == 0:
		return errorf(dm.ErrBusy, "%s: %s is open (%d users, e.g. NBD clients): disconnect them first; a merging snapshot cannot be used", op, s.name, s.dev.Info().OpenCount)
	case !in.LiveTable || in.Suspended || in.InactiveTable:
		return errorf(dm.ErrBusy, "%s: origin %s must be resumed, with a live table and no inactive one: resume it (or clear its inactive table) first", op, l.origin)
	}
	if _, err := mg.devs.Get(l.merge); how == offlineMerge && err == nil {
		return errorf(dm.ErrExists, "%s: %s is DAX-capable, so it merges offline through a device called %s, and one exists: rename or remove it", op, l.origin, l.merge)
	}
	return nil
}

// doStartMerge loads snapshot-merge into the origin (online) or creates
// ORIGIN-merge with it while the origin stays suspended (offline).
func (mg *Manager) doStartMerge(op string, l originLayout, s snapView, origin *dm.Device, how mergeMode) error {
	table := s.line.text(snapshot.MergeType)
	if err := mg.fault("start-merge"); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if how == onlineMerge {
		if err := origin.Load(table); err != nil {
			return fmt.Errorf("%s: load snapshot-merge into %s: %w", op, l.origin, err)
		}
		if err := mg.quiesceOrigin(op, origin); err != nil {
			return errors.Join(err, origin.Clear())
		}
		if err := mg.checkUnused(op, l, s, origin); err != nil {
			return errors.Join(err, origin.Clear(), origin.Resume())
		}
		if err := origin.Resume(); err != nil {
			return errors.Join(fmt.Errorf("%s: %w", op, err), origin.Clear(), origin.Resume())
		}
		return nil
	}
	if _, err := mg.devs.Get(l.merge); err != nil {
		// The merge rewrites the origin's memory under any mapping of it:
		// take them back first; new ones wait while the origin is
		// suspended, for the whole merge.
		release, err := mg.host.Recall(origin, fmt.Sprintf("an offline merge of %s into %s rewrites its memory", s.name, l.origin))
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		defer release()
	}
	if err := mg.quiesceOrigin(op, origin); err != nil {
		return err
	}
	if _, err := mg.devs.Get(l.merge); err == nil {
		return nil // created before a restart: it resumed merging
	}
	if err := mg.checkUnused(op, l, s, origin); err != nil {
		return errors.Join(err, origin.Resume())
	}
	if _, err := mg.createDevice(l.merge, dm.CreateOptions{Table: table}); err != nil {
		return errors.Join(fmt.Errorf("%s: create %s to merge offline: %w", op, l.merge, err), origin.Resume())
	}
	return nil
}

// waitMerged waits until the merge on j's origin has copied everything.
func (mg *Manager) waitMerged(j *mergeJob) error {
	l := layoutOf(j.origin)
	for {
		m, ok := mg.mergeOf(l)
		if !ok {
			if j.resumeFinish {
				return nil
			}
			return fmt.Errorf("the merge device of %s is gone before the merge finished: %s still holds what was not merged", j.origin, j.name)
		}
		u := usageOf(m.dev)
		switch u.state {
		case wire.SnapshotMergeFailed, wire.SnapshotInvalid, wire.SnapshotError:
			return fmt.Errorf("merge of %s into %s failed (status %q): the daemon log says why; `daxsnap snapshot remove %s` abandons it",
				j.name, j.origin, u.text, j.name)
		}
		j.observe(u.exceptions(m.line.Store, m.line.Chunk))
		if u.allocated == u.metadata {
			return nil
		}
		nr := m.dev.Info().EventNr
		ctx, cancel := context.WithTimeout(mg.merges.ctx, 50*time.Millisecond)
		m.dev.WaitEvent(ctx, nr)
		cancel()
		if mg.merges.ctx.Err() != nil {
			return errStopping
		}
	}
}

// finishMerge removes the merged snapshot and gives the origin its
// table back, as a state transition.
func (mg *Manager) finishMerge(j *mergeJob) error {
	op := fmt.Sprintf("snapshot merge %s: finish", j.name)
	l := layoutOf(j.origin)
	unlock := mg.lockLayout(l, j.name)
	defer unlock()
	origin, err := mg.devs.Get(l.origin)
	if err != nil {
		return fmt.Errorf("%s: origin %s is gone", op, l.origin)
	}
	if m, ok := mg.mergeOf(l); ok {
		if u := usageOf(m.dev); u.state != wire.SnapshotActive || u.allocated != u.metadata {
			return fmt.Errorf("%s: the merge on %s is not done (status %q)", op, m.dev.Name(), u.text)
		}
	}
	err = mg.store.DeviceTransition(l.origin, state.Op{Verb: "snapshot-merge-finish", Arg: j.name}, func() error { return mg.doFinishMerge(op, l, j.name, origin) },
		func() *state.Device { return mg.host.Record(origin) })
	if err != nil {
		return err
	}
	// Remembered so that waiting on the merge later reports it finished.
	if err := mg.store.PutMerge(state.Merge{Snapshot: j.name, Origin: j.origin, FinishedAt: time.Now().UTC()}); err != nil {
		mg.log.Warn("cannot record the finished merge: waiting on it later says there is no such snapshot", "snapshot", j.name, "err", err)
	}
	return nil
}

func (mg *Manager) doFinishMerge(op string, l originLayout, name string, origin *dm.Device) error {
	if err := mg.fault("finish-merge"); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := mg.quiesceOrigin(op, origin); err != nil {
		return err
	}
	var cow string
	var releases []func() error
	releaseAll := func() error {
		var errs []error
		for _, r := range releases {
			errs = append(errs, r())
		}
		return errors.Join(errs...)
	}
	// remove takes dev away under the suspend; its tables go with
	// releaseAll, after the resume.
	remove := func(dev *dm.Device, what string) error {
		release, err := mg.removeDeviceLater(dev, evenIfOpen)
		releases = append(releases, release)
		if err != nil {
			return errors.Join(fmt.Errorf("%s: remove %s: %w", op, what, err), releaseAll())
		}
		return nil
	}
	if m, ok := mg.mergeOf(l); ok {
		cow = m.line.COW
		if m.offline {
			if err := remove(m.dev, l.merge); err != nil {
				return err
			}
		}
	}
	if s, err := mg.findSnapshot(op, name); err == nil && s.line.Origin == l.realPath() {
		cow = s.line.COW
		if err := remove(s.dev, "the merged snapshot "+name); err != nil {
			return err
		}
	}
	settled, released := mg.settleOriginReleasing(l, origin, releaseAll)
	if settled != nil {
		return fmt.Errorf("%s: %w", op, errors.Join(settled, released))
	}
	if released != nil {
		return fmt.Errorf("%s: %s is merged and removed, but closing its COW failed: %w", op, name, released)
	}
	if cow != "" && mg.tableUsing(cow) == "" {
		return mg.removeOwnedCOW(cow)
	}
	return nil
}

// mergeProgress describes merge m of snapshot s.
func (mg *Manager) mergeProgress(s snapView, m mergeView) *wire.MergeProgress {
	u := usageOf(m.dev)
	p := &wire.MergeProgress{Device: m.dev.Name(), Offline: m.offline, Remaining: u.exceptions(m.line.Store, m.line.Chunk)}
	p.Start = p.Remaining
	if j := mg.merges.get(s.origin); j != nil && j.name == s.name {
		start, seen, err := j.result()
		if seen {
			p.Start = max(start, p.Remaining)
		}
		if err != nil && !errors.Is(err, errStopping) {
			p.Error = err.Error()
		}
	}
	if u.state == wire.SnapshotMergeFailed {
		p.Error = "the merge stopped on an error (see the daemon log); `daxsnap snapshot remove " + s.name + "` abandons it"
	}
	p.Percent = 100
	if p.Start > 0 {
		p.Percent = float64(p.Start-p.Remaining) * 100 / float64(p.Start)
	}
	return p
}

// offlineMergeOf reports an offline merge still running on origin.
func (mg *Manager) offlineMergeOf(origin string) (mergeView, bool) {
	m, ok := mg.mergeOf(layoutOf(origin))
	if !ok || !m.offline || mg.mergeFailed(m) {
		return mergeView{}, false
	}
	return m, true
}
