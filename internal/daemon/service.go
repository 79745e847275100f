package daemon

import (
	"context"
	"runtime"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// The daemon serves the API through one small adapter per resource, so
// that the verbs are not methods of *Daemon: each adapter embeds the
// daemon and its methods are the service's, in the file of its verb
// (devices.go, device_*.go, data.go and disconnect.go; sessions.go). The
// region and snapshot verbs are their managers', which the pmem and
// snapshot adapters forward to, here.
type (
	deviceService   struct{ *Daemon }
	snapshotService struct{ *Daemon }
	pmemService     struct{ *Daemon }
	sessionService  struct{ *Daemon }
)

var (
	_ api.DeviceService   = deviceService{}
	_ api.SnapshotService = snapshotService{}
	_ api.PmemService     = pmemService{}
	_ api.SessionService  = sessionService{}
	_ api.DataAuthorizer  = deviceService{}
	_ api.Disconnecter    = deviceService{}
	_ api.OwnerSetter     = deviceService{}
)

// service is the daemon's api.Service: the four adapters, and the
// daemon's version and target types.
type service struct {
	d *Daemon
	deviceService
	snapshotService
	pmemService
	sessionService
	checkpointService
}

// Service returns the API the daemon serves on its socket, to call in
// process.
func (d *Daemon) Service() api.Service {
	return service{d, deviceService{d}, snapshotService{d}, pmemService{d}, sessionService{d}, checkpointService{d}}
}

// Version reports the daemon's version.
func (s service) Version(ctx context.Context) (wire.Version, error) {
	return wire.Version{Version: s.d.cfg.Version, API: wire.APIVersion, GoVersion: runtime.Version()}, nil
}

// Targets lists the registered target types (dmsetup targets).
func (s service) Targets(ctx context.Context) ([]wire.Target, error) {
	out := []wire.Target{}
	for _, tt := range s.d.reg.Types() {
		out = append(out, wire.Target{Name: tt.Name, Version: tt.Version})
	}
	return out, nil
}

// The region verbs are the region manager's (internal/pmem).

// PmemCreate makes a memory region: a file reserved on tmpfs or hugetlbfs.
func (s pmemService) PmemCreate(ctx context.Context, req wire.PmemCreate) (wire.Pmem, error) {
	return s.regions.Create(req)
}

// PmemList lists the regions.
func (s pmemService) PmemList(ctx context.Context) ([]wire.Pmem, error) { return s.regions.List() }

// PmemGet describes one region.
func (s pmemService) PmemGet(ctx context.Context, name string) (wire.Pmem, error) {
	return s.regions.Get(name)
}

// PmemRemove deletes a region no table uses.
func (s pmemService) PmemRemove(ctx context.Context, name string) error {
	return s.regions.Remove(name)
}

// The snapshot verbs are the snapshot manager's (internal/snapshots).

// Snapshots lists the snapshots, of one origin if origin is not "".
func (s snapshotService) Snapshots(ctx context.Context, origin string) ([]wire.Snapshot, error) {
	return s.snaps.Snapshots(origin)
}

// Snapshot describes one snapshot.
func (s snapshotService) Snapshot(ctx context.Context, name string) (wire.Snapshot, error) {
	return s.snaps.Snapshot(name)
}

// SnapshotCreate takes a snapshot (lvcreate --snapshot).
func (s snapshotService) SnapshotCreate(ctx context.Context, req wire.SnapshotCreate) (wire.Snapshot, error) {
	return s.snaps.SnapshotCreate(req)
}

// SnapshotRemove removes a snapshot (lvremove).
func (s snapshotService) SnapshotRemove(ctx context.Context, name string) error {
	return s.snaps.SnapshotRemove(name)
}

// SnapshotExtend grows a snapshot's COW (lvextend).
func (s snapshotService) SnapshotExtend(ctx context.Context, name string, req wire.SnapshotExtend) (wire.Snapshot, error) {
	return s.snaps.SnapshotExtend(name, req)
}

// SnapshotMerge merges a snapshot into its origin (lvconvert --merge).
func (s snapshotService) SnapshotMerge(ctx context.Context, name string, req wire.SnapshotMerge) (wire.Snapshot, error) {
	return s.snaps.SnapshotMerge(ctx, name, req)
}
