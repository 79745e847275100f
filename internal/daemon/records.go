package daemon

import (
	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// record describes dev as the state file should keep it, read back from
// dm after an operation so that it says what really happened; nil if dev
// is gone. A degraded device keeps its recorded table, not the `error`
// table it serves in its place.
func (d *Daemon) record(dev *dm.Device) *state.Device {
	if got, err := d.mgr.Get(dev.Name()); err != nil || got != dev {
		return nil
	}
	in := dev.Info()
	owner, n := d.devs.read(dev)
	rec := &state.Device{Name: in.Name, UUID: in.UUID, ReadOnly: in.ReadOnly,
		Suspended: in.Suspended, DeferredRemove: in.DeferredRemove, Owner: pmem.RecordOwner(owner),
		Autoextend: d.snaps.RecordAutoextend(dev), Checkpoint: d.cks.record(dev), Number: new(dev.Number())}
	rec.MergeDeferred = n.mergeDeferred
	rec.Live, _ = dev.Table(dm.Live)
	rec.Inactive, _ = dev.Table(dm.Inactive)
	if kept := n.keptLive; kept != "" {
		rec.Live = kept
	}
	return rec
}

// info converts dm's view of dev to the API's.
func (d *Daemon) info(dev *dm.Device) wire.Info {
	in := dev.Info()
	owner, n := d.devs.read(dev)
	return wire.Info{
		Name: in.Name, UUID: in.UUID, Suspended: in.Suspended, ReadOnly: in.ReadOnly,
		DeferredRemove: in.DeferredRemove, LiveTable: in.LiveTable, InactiveTable: in.InactiveTable,
		OpenCount: in.OpenCount, EventNr: in.EventNr, TargetCount: in.TargetCount,
		Sectors: uint64(in.Size), Capabilities: in.LiveCaps.String(),
		FixedCaps: in.FixedCaps.String(), Note: n.String(),
		UID: owner.UID, GID: owner.GID, Mode: access.FormatMode(owner.Mode),
		Holders: d.holders.holderList(dev), Durability: d.durability(dev),
		Major: dm.Major, Minor: in.Number, ReadAhead: in.ReadAhead, Deps: wireDeps(dev.Deps()),
	}
}

// wireDeps converts dm's dependencies to the API's.
func wireDeps(deps []dm.Dep) []wire.Dep {
	var out []wire.Dep
	for _, dep := range deps {
		w := wire.Dep{Path: dep.Path, Block: dep.Block, Major: dep.Major, Minor: dep.Minor}
		if dep.Mapped != nil {
			w.Name = dep.Mapped.Name()
		}
		out = append(out, w)
	}
	return out
}
