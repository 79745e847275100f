package apiclient

import (
	"context"
	"fmt"
	"sync"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// fakeService answers every call with canned data and records the calls;
// a device called "busy", "dax", "missing"... fails with that class.
type fakeService struct {
	mu    sync.Mutex
	calls []string
}

var failures = map[string]error{
	"busy":    fmt.Errorf("remove busy: %w: open count 1", dm.ErrBusy),
	"dax":     &dm.TableError{Device: "dax", Line: 1, Target: "zero", Reason: "would lose dax", Err: dm.ErrDAXChange},
	"bad":     &dm.TableError{Device: "bad", Line: 2, Reason: "gap in table"},
	"missing": fmt.Errorf("info missing: %w", dm.ErrNotFound),
	"taken":   fmt.Errorf("create taken: %w", dm.ErrExists),
	"empty":   fmt.Errorf("resume empty: %w", dm.ErrNoTable),
	"boom":    fmt.Errorf("something unexpected"),
}

func (f *fakeService) call(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeService) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeService) Version(ctx context.Context) (wire.Version, error) {
	return wire.Version{Version: "fake", API: wire.APIVersion}, nil
}
func (f *fakeService) Targets(ctx context.Context) ([]wire.Target, error) {
	return []wire.Target{{Name: "linear", Version: [3]int{1, 5, 0}}}, nil
}
func (f *fakeService) PmemList(ctx context.Context) ([]wire.Pmem, error) { return []wire.Pmem{}, nil }
func (f *fakeService) PmemGet(ctx context.Context, name string) (wire.Pmem, error) {
	return wire.Pmem{Name: name}, failures[name]
}
func (f *fakeService) PmemCreate(ctx context.Context, req wire.PmemCreate) (wire.Pmem, error) {
	f.call("pmem create %s %d %s %v", req.Name, req.Size, req.Dir, req.Hugetlb)
	return wire.Pmem{Name: req.Name, Size: req.Size}, failures[req.Name]
}
func (f *fakeService) PmemRemove(ctx context.Context, name string) error {
	f.call("pmem remove %s", name)
	return failures[name]
}
func (f *fakeService) Devices(ctx context.Context) ([]wire.Info, error) {
	return []wire.Info{{Name: "a"}}, nil
}
func (f *fakeService) Create(ctx context.Context, req wire.DeviceCreate) (wire.Info, error) {
	f.call("create %s uuid=%s ro=%v notable=%v owner=%s:%s:%q table=%q", req.Name, req.UUID, req.ReadOnly, req.NoTable,
		optID(req.UID), optID(req.GID), req.Mode, req.Table)
	return wire.Info{Name: req.Name}, failures[req.Name]
}

// optID prints an optional uid or gid, "-" when absent.
func optID(id *uint32) string {
	if id == nil {
		return "-"
	}
	return fmt.Sprint(*id)
}
func (f *fakeService) Info(ctx context.Context, name string) (wire.Info, error) {
	return wire.Info{Name: name}, failures[name]
}
func (f *fakeService) Load(ctx context.Context, name string, req wire.Load) error {
	f.call("load %s %q", name, req.Table)
	return failures[name]
}
func (f *fakeService) Suspend(ctx context.Context, name string, req wire.Suspend) error {
	f.call("suspend %s noflush=%v", name, req.NoFlush)
	return failures[name]
}
func (f *fakeService) Resume(ctx context.Context, name string) error {
	f.call("resume %s", name)
	return failures[name]
}
func (f *fakeService) Clear(ctx context.Context, name string) error {
	f.call("clear %s", name)
	return failures[name]
}
func (f *fakeService) WipeTable(ctx context.Context, name string) error {
	f.call("wipe %s", name)
	return failures[name]
}
func (f *fakeService) Remove(ctx context.Context, name string, req wire.Remove) error {
	f.call("remove %s force=%v deferred=%v", name, req.Force, req.Deferred)
	return failures[name]
}
func (f *fakeService) Rename(ctx context.Context, name string, req wire.Rename) (wire.Info, error) {
	f.call("rename %s %s", name, req.NewName)
	return wire.Info{Name: req.NewName}, failures[name]
}
func (f *fakeService) Message(ctx context.Context, name string, req wire.Message) (wire.MessageReply, error) {
	f.call("message %s %d %v", name, req.Sector, req.Args)
	return wire.MessageReply{Reply: "ok"}, failures[name]
}
func (f *fakeService) Table(ctx context.Context, name string, inactive bool) (wire.Text, error) {
	return wire.Text{Name: name, Inactive: inactive, Text: "0 8 zero \n"}, failures[name]
}
func (f *fakeService) Status(ctx context.Context, name string, inactive bool) (wire.Text, error) {
	return wire.Text{Name: name, Inactive: inactive, Text: "0 8 zero \n"}, failures[name]
}
func (f *fakeService) ReadData(ctx context.Context, name string, off, n int64) ([]byte, error) {
	return make([]byte, n), failures[name]
}
func (f *fakeService) WriteData(ctx context.Context, name string, off int64, p []byte) error {
	f.call("write %s %d %d", name, off, len(p))
	return failures[name]
}
func (f *fakeService) Snapshots(ctx context.Context, origin string) ([]wire.Snapshot, error) {
	f.call("snapshots origin=%s", origin)
	return []wire.Snapshot{{Name: "s", Origin: origin}}, failures[origin]
}
func (f *fakeService) Snapshot(ctx context.Context, name string) (wire.Snapshot, error) {
	return wire.Snapshot{Name: name, State: wire.SnapshotActive}, failures[name]
}
func (f *fakeService) SnapshotCreate(ctx context.Context, req wire.SnapshotCreate) (wire.Snapshot, error) {
	f.call("snapshot create %s %s cow=%s size=%d chunk=%d transient=%v", req.Origin, req.Name, req.COW, req.COWSize, req.ChunkSize, req.Transient)
	return wire.Snapshot{Name: req.Name, Origin: req.Origin}, failures[req.Name]
}
func (f *fakeService) SnapshotRemove(ctx context.Context, name string) error {
	f.call("snapshot remove %s", name)
	return failures[name]
}
func (f *fakeService) SnapshotExtend(ctx context.Context, name string, req wire.SnapshotExtend) (wire.Snapshot, error) {
	return wire.Snapshot{Name: name}, failures[name]
}
func (f *fakeService) SnapshotMerge(ctx context.Context, name string, req wire.SnapshotMerge) (wire.Snapshot, error) {
	f.call("snapshot merge %s nowait=%v", name, req.NoWait)
	return wire.Snapshot{Name: name, State: wire.SnapshotMerged}, failures[name]
}
func (f *fakeService) Sessions(ctx context.Context) ([]wire.DAXSession, error) {
	f.call("sessions")
	return []wire.DAXSession{{PID: 42, UID: 7, Mappings: []wire.DAXMapping{{Device: "vol", Length: 4096, Write: true}},
		Problems: []string{"mapping 1 of vol lacks uw"}}}, nil
}
func (f *fakeService) CheckpointGet(ctx context.Context, name string) (wire.Durability, error) {
	f.call("checkpoint-get %s", name)
	return wire.Durability{Device: name, State: wire.DurabilityVolatile, Text: wire.DurabilityVolatile}, failures[name]
}
func (f *fakeService) CheckpointEnable(ctx context.Context, name string, req wire.CheckpointEnable) (wire.Durability, error) {
	f.call("checkpoint-enable %s %s %d", name, req.Path, req.IntervalMS)
	return wire.Durability{Device: name, State: wire.DurabilityCheckpointed, Path: req.Path, IntervalMS: req.IntervalMS}, failures[name]
}
func (f *fakeService) CheckpointNow(ctx context.Context, name string) (wire.Durability, error) {
	f.call("checkpoint-now %s", name)
	return wire.Durability{Device: name, State: wire.DurabilityCheckpointed, Last: &wire.CheckpointInfo{Seq: 3}}, failures[name]
}
func (f *fakeService) CheckpointDisable(ctx context.Context, name string) error {
	f.call("checkpoint-disable %s", name)
	return failures[name]
}
