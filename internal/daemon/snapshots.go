package daemon

import (
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/state"
)

// The snapshot verbs are internal/snapshots' (an LVM-like manager on the
// daemon's devices); the daemon hands it what it needs (snapshotHost) and
// serves its verbs on the API (snapshotService, in service.go).

// snapshotHost is the daemon as the snapshot manager sees it.
type snapshotHost struct{ d *Daemon }

var _ snapshots.Host = snapshotHost{}

func (h snapshotHost) Record(dev *dm.Device) *state.Device { return h.d.record(dev) }

func (h snapshotHost) CreateDevice(name string, opts dm.CreateOptions) (*dm.Device, error) {
	d := h.d
	var dev *dm.Device
	create := func() (err error) {
		dev, err = d.mgr.Create(name, opts)
		return err
	}
	err := d.store.DeviceTransition(name, state.Op{Verb: "create"}, create, func() *state.Device {
		if dev == nil {
			return nil
		}
		return d.record(dev)
	})
	return dev, err
}

func (h snapshotHost) RemoveDevice(dev *dm.Device, opts dm.RemoveOptions) (release func() error, err error) {
	d, name := h.d, dev.Name()
	release = func() error { return nil }
	remove := func() (err error) {
		release, err = d.mgr.RemoveLater(name, opts)
		return err
	}
	err = d.store.DeviceTransition(name, state.Op{Verb: "remove"}, remove, func() *state.Device { return d.record(dev) })
	if _, gerr := d.mgr.Get(name); gerr == nil && opts.Deferred {
		d.devs.updateNote(name, func(n *note) { n.degraded, n.keptLive = "", "" })
	}
	return release, err
}

func (h snapshotHost) Lock(names ...string) (unlock func()) { return h.d.locks.lock(names...) }

// LockTables takes graphMu and the regions' lock, after the name locks.
func (h snapshotHost) LockTables() (unlock func()) {
	h.d.graphMu.Lock()
	unlockRegions := h.d.regions.LockTables()
	return func() {
		unlockRegions()
		h.d.graphMu.Unlock()
	}
}

func (h snapshotHost) Users(name string) []string { return h.d.holders.users(name) }

func (h snapshotHost) Holders(dev *dm.Device, which snapshots.HolderKinds) snapshots.Users {
	var daxUsers func(session.MappingInfo) bool // none
	if which == snapshots.OpenersAndMaps {
		daxUsers = func(session.MappingInfo) bool { return true }
	}
	return devUsers(h.d.holders.holdersOf(dev, daxUsers))
}

func (h snapshotHost) Recall(dev *dm.Device, reason string) (release func(), err error) {
	return h.d.sessions.recall(dev, reason)
}

func (h snapshotHost) UserEvents() <-chan struct{} { return h.d.userEvents.wait() }

func (h snapshotHost) RefuseWhileStopping(op string) error { return h.d.refuseWhileStopping(op) }

func (h snapshotHost) Note(name string) snapshots.Note {
	n := h.d.devs.noteOn(name)
	return snapshots.Note{KeptLive: n.keptLive, Degraded: n.degraded, MergeDeferred: n.mergeDeferred, Text: n.String()}
}

func (h snapshotHost) SetMergeDeferred(name string, on bool) {
	h.d.devs.updateNote(name, func(n *note) { n.mergeDeferred = on })
}

func (h snapshotHost) SetInterrupted(name, why string) {
	h.d.devs.updateNote(name, func(n *note) { n.interrupted = why })
}

func (h snapshotHost) CheckpointImage(dev *dm.Device) string {
	if cfg := h.d.cks.record(dev); cfg != nil {
		return cfg.Path
	}
	return ""
}
