package snapshots

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// createPlan is a checked snapshot creation.
type createPlan struct {
	op        string
	l         originLayout
	name      string
	origin    *dm.Device
	size      dm.Sector
	newReal   bool   // the origin does not sit on ORIGIN-real yet
	realTable string // the origin's live table, for a new ORIGIN-real
	cow       string
	cowSize   int64 // > 0: the daemon creates the COW file
	store     exstore.StoreType
	chunk     dm.Sector
	note      string // what the daemon chose
	policy    autoPolicy
	ownPolicy bool // the snapshot has its own autoextend policy
	adopt     bool // the COW is adopted: no changed-block marks
	readOnly  bool // --permission r
}

func (p createPlan) snapshotTable() string {
	args := snapshot.Args{Origin: p.l.realPath(), COW: p.cow, Store: p.store, Chunk: p.chunk}
	return args.Line(snapshot.SnapshotType, p.size).String() + "\n"
}

func (p createPlan) originTable() string { return originTable(p.size, p.l) }

// SnapshotCreate takes a snapshot of req.Origin as LVM does: the origin's
// table moves to ORIGIN-real (unless it has snapshots already), the
// snapshot NAME maps ORIGIN-real and a COW, and the origin becomes
// snapshot-origin over ORIGIN-real, all while the origin is suspended, so
// its users see a pause and never an error. Any failure undoes every step.
func (mg *Manager) SnapshotCreate(req wire.SnapshotCreate) (wire.Snapshot, error) {
	op := fmt.Sprintf("snapshot create %s %s", req.Origin, req.Name)
	if err := checkSnapshotNames(op, req); err != nil {
		return wire.Snapshot{}, err
	}
	if err := mg.host.RefuseWhileStopping(op); err != nil {
		return wire.Snapshot{}, err
	}
	l := layoutOf(req.Origin)
	unlock := mg.lockLayout(l, req.Name)
	defer unlock()
	p, err := mg.planCreate(op, l, req)
	if err != nil {
		return wire.Snapshot{}, err
	}
	verb, giveBack := "snapshot-create", func() {}
	if req.Adopt {
		// Recovery from a stop in the middle undoes the snapshot but,
		// unlike a creation's, keeps the COW (in lost+found again).
		verb = "snapshot-adopt"
		if giveBack, err = mg.claimCOW(&p); err != nil {
			return wire.Snapshot{}, err
		}
	}
	var createErr error
	err = mg.store.DeviceTransition(l.origin, state.Op{Verb: verb, Arg: p.name}, func() error { createErr = mg.doCreate(p); return createErr },
		func() *state.Device { return mg.host.Record(p.origin) })
	if createErr != nil {
		giveBack() // every step was undone: no table names the COW
	}
	if err != nil {
		return wire.Snapshot{}, err
	}
	mg.log.Info("snapshot created", "snapshot", p.name, "origin", l.origin, "cow", p.cow, "store", p.store, "chunk", p.chunk)
	s, err := mg.findSnapshot(op, p.name)
	if err != nil {
		return wire.Snapshot{}, err
	}
	out := mg.describe(s)
	out.Note = strings.TrimSpace(p.note + " " + out.Note)
	return out, nil
}

func checkSnapshotNames(op string, req wire.SnapshotCreate) error {
	switch {
	case req.Origin == "":
		return errorf(dm.ErrInvalidArgument, "snapshot create: no origin given: name the device to snapshot")
	case req.Name == "" || len(req.Name) > dm.MaxNameLen:
		return errorf(dm.ErrInvalidArgument, "%s: snapshot name %.40q: give a name of 1 to %d bytes without '/' or blanks", op, req.Name, dm.MaxNameLen)
	case dm.BadNameChar(req.Name) != "":
		return errorf(dm.ErrInvalidArgument, "%s: snapshot name %q contains %s: give a name without '/', blanks or control characters", op, req.Name, dm.BadNameChar(req.Name))
	case len(req.Origin)+len(MergeSuffix) > dm.MaxNameLen:
		return errorf(dm.ErrInvalidArgument, "%s: origin name is %d bytes; its snapshots need %s%s, which must fit in %d: rename the origin to something shorter",
			op, len(req.Origin), req.Origin, MergeSuffix, dm.MaxNameLen)
	case req.COW != "" && req.COWSize != 0:
		return errorf(dm.ErrInvalidArgument, "%s: both a COW file and a COW size given: give --cow FILE or --cow-size SIZE, not both", op)
	case req.Adopt && (req.COW == "" || req.COWSize != 0 || req.Transient):
		return errorf(dm.ErrInvalidArgument, "%s: adopting a COW needs the COW file, and neither a COW size nor a transient store (it is persistent): `daxsnap cow adopt FILE ORIGIN NAME`", op)
	case req.COWSize < 0 || req.ChunkSize < 0:
		return errorf(dm.ErrInvalidArgument, "%s: negative size: give sizes such as 64M and 4k", op)
	}
	return nil
}

// planCreate checks everything that can be checked before the first step.
func (mg *Manager) planCreate(op string, l originLayout, req wire.SnapshotCreate) (createPlan, error) {
	p := createPlan{op: op, l: l, name: req.Name, store: exstore.Persistent, adopt: req.Adopt, readOnly: req.ReadOnly}
	if req.Transient {
		p.store = exstore.Transient
	}
	var err error
	if p.policy, err = checkAutoextend(op, req.AutoextendThreshold, req.AutoextendPercent); err != nil {
		return p, err
	}
	p.ownPolicy = req.AutoextendThreshold != 0
	origin, err := mg.devs.Get(l.origin)
	if err != nil {
		return p, errorf(dm.ErrNotFound, "%s: no origin device %s: `daxsnap ls` lists the devices", op, l.origin)
	}
	p.origin = origin
	if err := mg.checkNewName(op, l, req.Name); err != nil {
		return p, err
	}
	if err := mg.checkOrigin(op, l, origin); err != nil {
		return p, err
	}
	live, _ := origin.Table(dm.Live)
	if over, ok := originOver(live); ok && over == l.realPath() {
		if _, err := mg.devs.Get(l.real); err != nil {
			return p, errorf(dm.ErrNotFound, "%s: %s maps %s, which does not exist: load a table into %s by hand first", op, l.origin, l.realPath(), l.origin)
		}
	} else {
		if _, err := mg.devs.Get(l.real); err == nil {
			return p, errorf(dm.ErrExists, "%s: a device called %s exists, but %s does not map it; a snapshot needs that name for %s's current table: rename or remove %s",
				op, l.real, l.origin, l.origin, l.real)
		}
		p.newReal, p.realTable = true, live
	}
	p.size = origin.Info().Size
	if p.chunk, err = checkChunk(op, req.ChunkSize, dm.SectorSize); err != nil {
		return p, err
	}
	return p, mg.planCOW(&p, req)
}

// checkNewName refuses a snapshot name already taken (or reserved).
func (mg *Manager) checkNewName(op string, l originLayout, name string) error {
	if name == l.origin || name == l.real || name == l.merge {
		return errorf(dm.ErrInvalidArgument, "%s: %s is the name of the origin or one daxsnap needs for its snapshots (%s, %s): pick another name", op, name, l.real, l.merge)
	}
	if _, err := mg.devs.Get(name); err == nil {
		return errorf(dm.ErrExists, "%s: a device called %s exists: pick another name, or remove it first", op, name)
	}
	return nil
}

// checkOrigin refuses an origin that cannot take a snapshot now.
func (mg *Manager) checkOrigin(op string, l originLayout, origin *dm.Device) error {
	if m, ok := mg.mergeOf(l); ok {
		return errorf(dm.ErrBusy, "%s: a snapshot is merging into %s (on %s): wait for the merge to finish (`daxsnap snapshot list %s`)", op, l.origin, m.dev.Name(), l.origin)
	}
	in := origin.Info()
	n := mg.host.Note(l.origin)
	switch {
	case n.KeptLive != "":
		return errorf(dm.ErrNoTable, "%s: %s serves an `error` table because its own did not load (%s): fix that first", op, l.origin, n.Degraded)
	case !in.LiveTable:
		return errorf(dm.ErrNoTable, "%s: %s has no live table: load and resume one first", op, l.origin)
	case in.Suspended:
		return errorf(dm.ErrSuspended, "%s: %s is suspended: resume it first (`daxsnap resume %s`)", op, l.origin, l.origin)
	case in.InactiveTable:
		return errorf(dm.ErrBusy, "%s: %s has an inactive table loaded, which taking a snapshot would replace: resume or clear it first", op, l.origin)
	}
	live, _ := origin.Table(dm.Live)
	if s, ok := mg.snapshotOf(origin); ok {
		of := s.origin
		if of == "" {
			of = s.line.Origin
		}
		return errorf(dm.ErrInvalidArgument, "%s: %s is itself a snapshot (of %s): like LVM, daxsnap does not snapshot a snapshot; take another snapshot of %s instead",
			op, l.origin, of, of)
	}
	if over, ok := originOver(live); ok && over != l.realPath() {
		return errorf(dm.ErrInvalidArgument, "%s: %s is a snapshot-origin of %s, not of %s as `daxsnap snapshot create` sets up: take its snapshots with the device verbs",
			op, l.origin, over, l.realPath())
	}
	return mg.checkNotUnderSnapshots(op, l)
}

// checkNotUnderSnapshots refuses an origin that is itself the device
// under another origin's snapshots (X-real) or under snapshots set up by
// hand.
func (mg *Manager) checkNotUnderSnapshots(op string, l originLayout) error {
	users := mg.host.Users(l.origin)
	slices.Sort(users)
	if x, ok := strings.CutSuffix(l.origin, RealSuffix); ok {
		if dev, err := mg.devs.Get(x); err == nil {
			if over, ok := originOver(mg.recordedLive(dev)); ok && over == dm.MapperPrefix+l.origin {
				return errorf(dm.ErrInvalidArgument, "%s: %s holds the data of %s under its snapshots: snapshot %s instead", op, l.origin, x, x)
			}
		}
	}
	for _, u := range users {
		dev, err := mg.devs.Get(u)
		if err != nil {
			continue
		}
		_, isOrigin := originOver(mg.recordedLive(dev))
		if s, ok := parseSnapLine(mg.recordedLive(dev)); isOrigin || ok && s.typ == snapshot.SnapshotType {
			return errorf(dm.ErrInvalidArgument, "%s: %s is the origin of %s, set up by hand: take further snapshots the same way, with the device verbs", op, l.origin, u)
		}
	}
	return nil
}

// planCOW checks the COW the user gave, or decides the one to create.
func (mg *Manager) planCOW(p *createPlan, req wire.SnapshotCreate) error {
	if req.Adopt {
		p.cow = filepath.Clean(req.COW)
		return mg.checkAdoptedCOW(p, req.ChunkSize)
	}
	if req.COW != "" {
		p.cow = filepath.Clean(req.COW)
		return mg.checkGivenCOW(p.op, p.cow, p.chunk, p.store)
	}
	// NAME.cow, unless a snapshot renamed since still uses that file:
	// then NAME.1.cow, NAME.2.cow...
	dir, where := mg.cowDirFor(p.origin)
	for i := 0; ; i++ {
		file := p.name + ".cow"
		if i > 0 {
			file = fmt.Sprintf("%s.%d.cow", p.name, i)
		}
		p.cow = filepath.Join(dir, file)
		if abs, err := filepath.Abs(p.cow); err == nil {
			p.cow = abs
		}
		if mg.tableUsing(p.cow) == "" {
			break
		}
	}
	originBytes := p.size.Bytes()
	p.cowSize = req.COWSize
	if p.cowSize == 0 {
		p.cowSize = defaultCOWSize(originBytes, p.chunk, p.store)
		p.note = fmt.Sprintf("COW %s: %d bytes (10%% of the origin, at least %d MiB, at most a full copy of %d bytes); give --cow-size to choose.",
			p.cow, p.cowSize, MinDefaultCOW>>20, fullCOWSize(originBytes, p.chunk, p.store))
	} else if where != "" {
		p.note = fmt.Sprintf("COW %s.", p.cow)
	}
	p.note += where
	if p.cowSize > math.MaxInt64-p.chunk.Bytes() {
		// Rounding it up to whole chunks would overflow.
		return errorf(dm.ErrInvalidArgument, "%s: COW size %d bytes is too large for any file: a full copy of %s takes %d bytes: give a --cow-size of at most that",
			p.op, req.COWSize, p.l.origin, fullCOWSize(originBytes, p.chunk, p.store))
	}
	p.cowSize = (p.cowSize + p.chunk.Bytes() - 1) / p.chunk.Bytes() * p.chunk.Bytes()
	if need := minCOWChunks(p.store) * p.chunk.Bytes(); p.cowSize < need {
		return errorf(dm.ErrInvalidArgument, "%s: COW size %d bytes is too small: a %s snapshot with %d-byte chunks needs at least %d bytes (a full copy of %s takes %d): give a larger --cow-size",
			p.op, req.COWSize, p.store.Describe(), p.chunk.Bytes(), need, p.l.origin, fullCOWSize(originBytes, p.chunk, p.store))
	}
	return nil
}

// doCreate runs the steps of a snapshot creation, undoing all of them if
// one fails: the origin ends up as it was, resumed.
func (mg *Manager) doCreate(p createPlan) error {
	var undo undoStack
	fail := func(err error) error { return undo.unwind(p.op, fmt.Errorf("%s: %w", p.op, err)) }
	origin := p.origin
	if p.newReal {
		if err := mg.fault("create-real"); err != nil {
			return fail(err)
		}
		real, err := mg.createDevice(p.l.real, dm.CreateOptions{Table: p.realTable, ReadOnly: origin.Info().ReadOnly})
		if err != nil {
			return fail(fmt.Errorf("create %s with %s's table: %w", p.l.real, p.l.origin, err))
		}
		undo.push(func() error { return mg.removeDevice(real, dm.RemoveOptions{}) })
	}
	if p.cowSize > 0 {
		if os.Remove(p.cow) == nil { // left by an interrupted creation
			mg.log.Warn("deleted a stale COW file no table used", "path", p.cow)
		}
		sparse, err := createCOW(p.cow, p.cowSize)
		if err != nil {
			return fail(fmt.Errorf("create COW file %s: %w", p.cow, err))
		}
		if sparse {
			p.note += " The file system cannot reserve blocks (fallocate), so the COW file is sparse and may fail to grow."
		}
		undo.push(func() error { return mg.removeOwnedCOW(p.cow) })
	}
	if p.newReal {
		if err := mg.fault("load-origin"); err != nil {
			return fail(err)
		}
		if err := origin.Load(p.originTable()); err != nil {
			return fail(fmt.Errorf("load snapshot-origin into %s: %w", p.l.origin, err))
		}
		undo.push(origin.Clear)
	}
	snap, err := mg.prepareSnapshot(p, &undo)
	if err != nil {
		return fail(err)
	}
	// The consistent cut for direct mappings is the core's (dm/cut.go), as
	// for any suspend and snapshot activation: the origin's suspend
	// write-protects every mapping of its memory with faults held, the
	// snapshot's activation keeps them so, and the origin's resume lets
	// the held stores resolve through snapshot-origin, copying first.
	// Writers wait from the cut to the resume: only what needs the origin
	// still is done in between (no file is made, no store written).
	if err := mg.quiesceOrigin(p.op, origin); err != nil {
		return fail(err)
	}
	undo.push(func() error { return errors.Join(origin.Clear(), origin.Resume()) })
	if err := mg.fault("activate-snapshot"); err != nil {
		return fail(err)
	}
	if err := snap.Resume(); err != nil {
		return fail(fmt.Errorf("activate snapshot device %s: %w", p.name, err))
	}
	// A write to the snapshot from now on is noted (noteWritten).
	undo.push(func() error { mg.forgetTracking(p.cow); return nil })
	mg.armAutoextend(snap) // before the origin's writes resume
	// Changed-block marks: the origin is suspended, so the older
	// snapshots' exception counts are exact; durable before the creation
	// is (the origin's record still names it, so a stop before then
	// removes the snapshot at start: Recover).
	marks, err := mg.takeMarks(p, snap)
	if err != nil {
		return fail(err)
	}
	if err := mg.fault("resume-origin"); err != nil {
		return fail(err)
	}
	if err := origin.Resume(); err != nil {
		return fail(fmt.Errorf("resume %s: %w", p.l.origin, err))
	}
	// The origin runs on the new tables: undoing the creation now is
	// removing the snapshot.
	err = mg.fault("record-snapshot")
	if err == nil {
		err = mg.recordMidOp(snap) // its live table, for a restart
	}
	if err == nil {
		err = mg.putMarks(marks)
	}
	if err != nil {
		err = fmt.Errorf("%s: record the snapshot: %w", p.op, err)
		if rerr := mg.unmake(p, snap, origin); rerr != nil {
			return errors.Join(err, fmt.Errorf("%s: removing it again failed too, check `daxsnap ls` and `daxsnap snapshot list`: %w", p.op, rerr))
		}
		return err
	}
	return nil
}

// unmake removes the snapshot a creation activated, the origin running
// again, as a removal does: the origin is suspended, the snapshot goes,
// the origin gets back the table it had and resumes, the snapshot's
// tables are released (ORIGIN-real goes then, if the creation made it)
// and a COW the daemon created is deleted; an adopted one stays for
// SnapshotCreate to give back.
func (mg *Manager) unmake(p createPlan, snap, origin *dm.Device) error {
	mg.forgetTracking(p.cow)
	if err := mg.quiesceOrigin(p.op, origin); err != nil {
		return err
	}
	release, err := mg.removeDeviceLater(snap, evenIfOpen)
	if err != nil {
		return errors.Join(err, origin.Resume(), release())
	}
	if settled, released := mg.settleOriginReleasing(p.l, origin, release); settled != nil || released != nil {
		return errors.Join(settled, released)
	}
	if p.cowSize > 0 {
		return mg.removeOwnedCOW(p.cow)
	}
	return nil
}

// prepareSnapshot makes the snapshot device with its table loaded, not
// yet active, while the origin runs: loading the table opens the COW and
// sets up its store (a new persistent store writes its header), and the
// device's record is written, none of which needs the cut. Activation,
// with the origin suspended, is all that is left (doCreate). A stop
// before the creation is recorded finds the device without a live table
// and removes it at start (recoverRemoval).
func (mg *Manager) prepareSnapshot(p createPlan, undo *undoStack) (*dm.Device, error) {
	if err := mg.fault("create-snapshot"); err != nil {
		return nil, err
	}
	snap, err := mg.createDevice(p.name, dm.CreateOptions{ReadOnly: p.readOnly})
	if err != nil {
		return nil, fmt.Errorf("create snapshot device %s: %w", p.name, err)
	}
	undo.push(func() error { return mg.removeDevice(snap, evenIfOpen) })
	if err := snap.Load(p.snapshotTable()); err != nil {
		return nil, fmt.Errorf("load the snapshot table into %s: %w", p.name, err)
	}
	if p.ownPolicy {
		mg.autoext.setOwn(snap, p.policy)
	}
	if err := mg.recordMidOp(snap); err != nil {
		return nil, fmt.Errorf("record %s: %w", p.name, err)
	}
	// A test's slow COW preparation (and the place its check that the
	// origin still runs looks from).
	if err := mg.fault("prepare-snapshot"); err != nil {
		return nil, err
	}
	return snap, nil
}
