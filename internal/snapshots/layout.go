package snapshots

import (
	"path/filepath"
	"sort"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/persistent"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Snapshots as LVM lays them out (the kernel's snapshot.rst): for origin
// ORIGIN,
//
//	ORIGIN-real   ORIGIN's original table
//	ORIGIN        0 LEN snapshot-origin /dev/mapper/ORIGIN-real
//	NAME          0 LEN snapshot /dev/mapper/ORIGIN-real COW P|N CHUNK
//	ORIGIN-merge  0 LEN snapshot-merge ... (only while a DAX origin merges offline)
//
// Everything daxsnap needs to know about a snapshot is in these tables,
// which the state file already keeps; a COW file daxsnap created lives in
// <state>/cow, so that is how it knows the file is its own to delete.
const (
	// RealSuffix and MergeSuffix name an origin's ORIGIN-real and
	// ORIGIN-merge.
	RealSuffix  = "-real"
	MergeSuffix = "-merge"
	// COWSubdir holds the COW files the daemon creates, in the state directory.
	COWSubdir = "cow"
)

// originLayout names the devices of one origin's snapshot stack.
type originLayout struct{ origin, real, merge string }

func layoutOf(origin string) originLayout {
	return originLayout{origin: origin, real: origin + RealSuffix, merge: origin + MergeSuffix}
}

func (l originLayout) realPath() string { return dm.MapperPrefix + l.real }

// snapLine is a one-line `snapshot` or `snapshot-merge` table: its
// Origin is /dev/mapper/ORIGIN-real for a snapshot daxsnap set up.
type snapLine struct {
	typ  *dm.TargetType // snapshot.SnapshotType or snapshot.MergeType
	size dm.Sector
	snapshot.Args
}

// parseSnapLine reads a table of exactly one snapshot or snapshot-merge
// line, in the targets' own grammar.
func parseSnapLine(text string) (snapLine, bool) {
	lines, err := dm.ParseTable(text)
	if err != nil || len(lines) != 1 {
		return snapLine{}, false
	}
	l := lines[0]
	var typ *dm.TargetType
	switch l.Type {
	case snapshot.SnapshotType.Name:
		typ = snapshot.SnapshotType
	case snapshot.MergeType.Name:
		typ = snapshot.MergeType
	default:
		return snapLine{}, false
	}
	args, err := snapshot.ParseArgs(l.Args)
	if err != nil {
		return snapLine{}, false
	}
	return snapLine{typ: typ, size: l.Len, Args: args}, true
}

// text renders the line as a target of type typ.
func (s snapLine) text(typ *dm.TargetType) string {
	return s.Line(typ, s.size).String() + "\n"
}

// originOver returns the device a one-line snapshot-origin or
// snapshot-merge table maps its origin from.
func originOver(text string) (string, bool) {
	lines, err := dm.ParseTable(text)
	if err != nil || len(lines) != 1 {
		return "", false
	}
	switch l := lines[0]; l.Type {
	case snapshot.OriginType.Name:
		origin, err := snapshot.ParseOriginArgs(l.Args)
		return origin, err == nil
	case snapshot.MergeType.Name:
		args, err := snapshot.ParseArgs(l.Args)
		return args.Origin, err == nil
	}
	return "", false
}

// originTable is l's origin as snapshot-origin over ORIGIN-real, of size
// sectors.
func originTable(size dm.Sector, l originLayout) string {
	line := dm.TableLine{Start: 0, Len: size, Type: snapshot.OriginType.Name, Args: []string{l.realPath()}}
	return line.String() + "\n"
}

// recordedLive is dev's live table as recorded: a degraded device serves
// `error` in place of the table it keeps.
func (mg *Manager) recordedLive(dev *dm.Device) string {
	if kept := mg.host.Note(dev.Name()).KeptLive; kept != "" {
		return kept
	}
	t, _ := dev.Table(dm.Live)
	return t
}

// snapView is one snapshot device.
type snapView struct {
	name     string
	dev      *dm.Device
	line     snapLine
	origin   string // the origin device; "" if daxsnap did not set the snapshot up
	degraded bool   // it serves an `error` table instead (see its note)
}

func (s snapView) layout() originLayout { return layoutOf(s.origin) }

// snapshots lists every device whose table is a `snapshot` line.
func (mg *Manager) snapshots() []snapView {
	var out []snapView
	for _, dev := range mg.devs.List() {
		if s, ok := mg.snapshotOf(dev); ok {
			out = append(out, s)
		}
	}
	return out
}

func (mg *Manager) snapshotOf(dev *dm.Device) (snapView, bool) {
	line, ok := parseSnapLine(mg.recordedLive(dev))
	if !ok || line.typ != snapshot.SnapshotType {
		return snapView{}, false
	}
	s := snapView{name: dev.Name(), dev: dev, line: line, degraded: mg.host.Note(dev.Name()).KeptLive != ""}
	if real, ok := strings.CutPrefix(line.Origin, dm.MapperPrefix); ok {
		if origin, ok := strings.CutSuffix(real, RealSuffix); ok && origin != "" {
			if _, err := mg.devs.Get(origin); err == nil {
				s.origin = origin
			}
		}
	}
	return s, true
}

// snapshotsOf lists the snapshots stacked on l's real device.
func (mg *Manager) snapshotsOf(l originLayout) []snapView {
	var out []snapView
	for _, s := range mg.snapshots() {
		if s.line.Origin == l.realPath() {
			out = append(out, s)
		}
	}
	return out
}

// SnapshotsOf names the snapshots stacked on origin's ORIGIN-real.
func (mg *Manager) SnapshotsOf(origin string) []string {
	var out []string
	for _, s := range mg.snapshotsOf(layoutOf(origin)) {
		out = append(out, s.name)
	}
	return out
}

// findSnapshot returns snapshot name, or an error saying what it is not.
func (mg *Manager) findSnapshot(op, name string) (snapView, error) {
	dev, err := mg.devs.Get(name)
	if err != nil {
		return snapView{}, errorf(dm.ErrNotFound, "%s: no snapshot called %s: `daxsnap snapshot list` lists them", op, name)
	}
	s, ok := mg.snapshotOf(dev)
	if !ok {
		return snapView{}, errorf(dm.ErrInvalidArgument, "%s: %s is not a snapshot (its table is not a `snapshot` line): `daxsnap snapshot list` lists the snapshots", op, name)
	}
	return s, nil
}

// managed refuses a snapshot that `snapshot create` did not set up: the
// high-level verbs would not know how to take it apart.
func (s snapView) managed(op string) error {
	if s.origin != "" {
		return nil
	}
	return errorf(dm.ErrInvalidArgument, "%s: %s maps origin %s, not the /dev/mapper/ORIGIN%s of a `daxsnap snapshot create`: take it apart with the device verbs (`daxsnap remove %s`)",
		op, s.name, s.line.Origin, RealSuffix, s.name)
}

// mergeView is a merge in progress on an origin.
type mergeView struct {
	dev     *dm.Device
	line    snapLine
	offline bool // on ORIGIN-merge while ORIGIN stays suspended
}

// mergeOf finds the merge running on l: the origin's own table
// (snapshot-merge), or ORIGIN-merge for an offline merge.
func (mg *Manager) mergeOf(l originLayout) (mergeView, bool) {
	for _, c := range []struct {
		name    string
		offline bool
	}{{l.origin, false}, {l.merge, true}} {
		dev, err := mg.devs.Get(c.name)
		if err != nil {
			continue
		}
		line, ok := parseSnapLine(mg.recordedLive(dev))
		if ok && line.typ == snapshot.MergeType && line.Origin == l.realPath() {
			return mergeView{dev: dev, line: line, offline: c.offline}, true
		}
	}
	return mergeView{}, false
}

// MergeInto names the snapshot that merges into origin, or whose merge
// into it is deferred until its users let go (deferred); "" if none.
func (mg *Manager) MergeInto(origin string) (snapshot string, deferred bool) {
	l := layoutOf(origin)
	if m, ok := mg.mergeOf(l); ok {
		if s, ok := mg.mergingSnapshot(l, m); ok {
			return s.name, false
		}
		return m.dev.Name(), false
	}
	for _, s := range mg.snapshotsOf(l) {
		if mg.host.Note(s.name).MergeDeferred {
			return s.name, true
		}
	}
	return "", false
}

// mergingSnapshot is the snapshot a merge copies back: the one on the
// same COW.
func (mg *Manager) mergingSnapshot(l originLayout, m mergeView) (snapView, bool) {
	for _, s := range mg.snapshotsOf(l) {
		if sameFile(s.line.COW, m.line.COW) {
			return s, true
		}
	}
	return snapView{}, false
}

// cowDir is where the daemon creates COW files: Config.COWDir, or
// <state>/cow.
func (mg *Manager) cowDir() string {
	if mg.cfg.COWDir != "" {
		return mg.cfg.COWDir
	}
	return filepath.Join(mg.cfg.Dir, COWSubdir)
}

// ownsCOW reports whether path is a COW file the daemon created: one in
// a COW directory of its own.
func (mg *Manager) ownsCOW(path string) bool {
	p, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for _, d := range mg.cowDirs() {
		if dir, err := filepath.Abs(d); err == nil && filepath.Dir(p) == dir {
			return true
		}
	}
	return false
}

// Snapshots lists the snapshots, of one origin if origin is not "".
func (mg *Manager) Snapshots(origin string) ([]wire.Snapshot, error) {
	if origin != "" {
		if _, err := mg.devs.Get(origin); err != nil {
			return nil, errorf(dm.ErrNotFound, "snapshot list %s: no such device: `daxsnap ls` lists the devices", origin)
		}
	}
	out := []wire.Snapshot{}
	for _, s := range mg.snapshots() {
		if origin == "" || s.origin == origin {
			out = append(out, mg.describe(s))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Snapshot describes one snapshot.
func (mg *Manager) Snapshot(name string) (wire.Snapshot, error) {
	s, err := mg.findSnapshot("snapshot show", name)
	if err != nil {
		return wire.Snapshot{}, err
	}
	return mg.describe(s), nil
}

// describe turns a snapshot device into its wire description.
func (mg *Manager) describe(s snapView) wire.Snapshot {
	out := wire.Snapshot{Name: s.name, Origin: s.origin, COW: s.line.COW, COWOwned: mg.ownsCOW(s.line.COW),
		Store: s.line.Store.String(), ChunkSize: s.line.Chunk.Bytes(), Sectors: uint64(s.line.size)}
	if out.Origin == "" {
		out.Origin = s.line.Origin
	}
	out.ReadOnly = s.dev.Info().ReadOnly
	if s.degraded {
		out.State, out.Note = wire.SnapshotError, mg.host.Note(s.name).Text
		return out
	}
	u := usageOf(s.dev)
	out.State = u.state
	out.Allocated, out.Total, out.Metadata = u.allocated, u.total, u.metadata
	if u.total > 0 {
		out.Usage = float64(u.allocated) * 100 / float64(u.total)
	}
	out.Exceptions = u.exceptions(s.line.Store, s.line.Chunk)
	if p := mg.policyOf(s.dev); p.on() {
		out.AutoextendThreshold, out.AutoextendPercent = p.threshold, p.percent
	}
	if s.origin != "" {
		if m, ok := mg.mergeOf(s.layout()); ok && sameFile(m.line.COW, s.line.COW) {
			out.Merge = mg.mergeProgress(s, m)
			if out.State == wire.SnapshotActive {
				out.State = wire.SnapshotMerging
			}
		}
	}
	n := mg.host.Note(s.name)
	out.Note, out.MergeDeferred = n.Text, n.MergeDeferred
	return out
}

// usage is a snapshot's (or a merge's) status, as its target has it.
type usage struct {
	// state is the wire's: wire.SnapshotError if dev's live table is no
	// snapshot or snapshot-merge target.
	state string
	// allocated, total and metadata are the COW's usage in sectors.
	allocated, total, metadata uint64
	text                       string // the status, as the target prints it
}

// usageOf asks dev's live snapshot or snapshot-merge target for its usage.
func usageOf(dev *dm.Device) usage {
	u, ok := snapshot.UsageOf(dev)
	if !ok {
		return usage{state: wire.SnapshotError}
	}
	out := usage{allocated: uint64(u.Allocated), total: uint64(u.Total), metadata: uint64(u.Metadata), text: u.String()}
	switch u.State {
	case snapshot.Valid:
		out.state = wire.SnapshotActive
	case snapshot.Invalid:
		out.state = wire.SnapshotInvalid
	case snapshot.Overflow:
		out.state = wire.SnapshotOverflow
	case snapshot.MergeFailed:
		out.state = wire.SnapshotMergeFailed
	default:
		out.state = wire.SnapshotError
	}
	return out
}

// exceptions is the number of data chunks allocated: for a persistent
// store, the chunks below next_free that hold neither the header nor a
// metadata area.
func (u usage) exceptions(store exstore.StoreType, chunk dm.Sector) uint64 {
	if chunk == 0 || u.allocated == 0 {
		return 0
	}
	next := u.allocated / uint64(chunk)
	if store == exstore.Transient {
		return next
	}
	return persistent.NewGeometry(chunk).DataChunks(exstore.Chunk(next))
}
