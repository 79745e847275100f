package apitest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/api/apitest"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/daemon/daemontest"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// startDaemon starts a daemon on temporary directories, its regions on
// /dev/shm, stopped when t ends; c is an API client on its socket.
func startDaemon(t testing.TB) (d *daemon.Daemon, c *apiclient.Client) {
	t.Helper()
	shm, err := os.MkdirTemp("/dev/shm", "daxsnap-apitest-")
	if err != nil {
		testutil.Skip(t, fmt.Sprintf("no /dev/shm to put memory regions in: %v", err))
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	d, c = daemontest.Start(t, daemon.Config{StateDir: t.TempDir(), PmemDir: shm, Version: "test",
		Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() {
		if err := daemontest.Stop(d, c); err != nil {
			t.Error(err)
		}
	})
	return d, c
}

// Ensure that the daemon, called in process, passes the suite.
func TestRun_daemon(t *testing.T) {
	apitest.Run(t, func() api.Service {
		d, _ := startDaemon(t)
		return d.Service()
	})
}

// Ensure that the HTTP client against a served daemon passes the suite:
// what crosses the socket is what the daemon answers in process.
func TestRun_client(t *testing.T) {
	apitest.Run(t, func() api.Service {
		_, c := startDaemon(t)
		return c
	})
}

// Broken services, each wrong in one way a check must notice. They wrap
// the daemon's service and change one method.
type (
	// noCodes drops every error's class: all become internal.
	noCodes struct{ api.Service }
	// wrongTable loses the last line of a table.
	wrongTable struct{ api.Service }
	// neverSuspended says a suspended device is running.
	neverSuspended struct{ api.Service }
	// fakeMerge answers merged without merging.
	fakeMerge struct{ api.Service }
	// lostSnapshots lists no snapshots.
	lostSnapshots struct{ api.Service }
	// offByOneRead reads one byte further on than asked.
	offByOneRead struct{ api.Service }
	// noUsers shows a region without the devices that use it.
	noUsers struct{ api.Service }
	// acceptsEmptyName creates a device without a name, as "unnamed".
	acceptsEmptyName struct{ api.Service }
	// phantomSession reports a session nobody opened.
	phantomSession struct{ api.Service }
	// staleRename answers a rename with the old name.
	staleRename struct{ api.Service }
	// oldVersion serves another API version.
	oldVersion struct{ api.Service }
)

func (s noCodes) Info(ctx context.Context, name string) (wire.Info, error) {
	in, err := s.Service.Info(ctx, name)
	if err != nil {
		err = errors.New(err.Error())
	}
	return in, err
}

func (s wrongTable) Table(ctx context.Context, name string, inactive bool) (wire.Text, error) {
	txt, err := s.Service.Table(ctx, name, inactive)
	if lines := strings.SplitAfter(txt.Text, "\n"); len(lines) > 2 {
		txt.Text = strings.Join(lines[:len(lines)-2], "")
	}
	return txt, err
}

func (s neverSuspended) Info(ctx context.Context, name string) (wire.Info, error) {
	in, err := s.Service.Info(ctx, name)
	in.Suspended = false
	return in, err
}

func (s fakeMerge) SnapshotMerge(ctx context.Context, name string, req wire.SnapshotMerge) (wire.Snapshot, error) {
	snap, err := s.Service.Snapshot(ctx, name)
	snap.State = wire.SnapshotMerged
	return snap, err
}

func (s lostSnapshots) Snapshots(ctx context.Context, origin string) ([]wire.Snapshot, error) {
	_, err := s.Service.Snapshots(ctx, origin)
	return []wire.Snapshot{}, err
}

func (s offByOneRead) ReadData(ctx context.Context, name string, off, n int64) ([]byte, error) {
	return s.Service.ReadData(ctx, name, off+1, n)
}

func (s noUsers) PmemGet(ctx context.Context, name string) (wire.Pmem, error) {
	p, err := s.Service.PmemGet(ctx, name)
	p.UsedBy = nil
	return p, err
}

func (s acceptsEmptyName) Create(ctx context.Context, req wire.DeviceCreate) (wire.Info, error) {
	if req.Name == "" {
		req.Name = "unnamed"
	}
	return s.Service.Create(ctx, req)
}

func (s phantomSession) Sessions(ctx context.Context) ([]wire.DAXSession, error) {
	list, err := s.Service.Sessions(ctx)
	return append(list, wire.DAXSession{PID: 1}), err
}

func (s staleRename) Rename(ctx context.Context, name string, req wire.Rename) (wire.Info, error) {
	in, err := s.Service.Rename(ctx, name, req)
	in.Name = name
	return in, err
}

func (s oldVersion) Version(ctx context.Context) (wire.Version, error) {
	v, err := s.Service.Version(ctx)
	v.API = "v0"
	return v, err
}

// Ensure that each deliberate bug is caught by the check aimed at it.
func TestChecks_brokenServices(t *testing.T) {
	for _, c := range []struct {
		name, check string
		wrap        func(api.Service) api.Service
	}{
		{"error codes dropped", "ErrorCodes", func(s api.Service) api.Service { return noCodes{s} }},
		{"error codes dropped, on lifecycle", "DeviceLifecycle", func(s api.Service) api.Service { return noCodes{s} }},
		{"last table line lost", "TableStatus", func(s api.Service) api.Service { return wrongTable{s} }},
		{"suspend not shown", "SuspendResume", func(s api.Service) api.Service { return neverSuspended{s} }},
		{"merge answered, not done", "SnapshotMerge", func(s api.Service) api.Service { return fakeMerge{s} }},
		{"snapshots not listed", "Snapshots", func(s api.Service) api.Service { return lostSnapshots{s} }},
		{"read off by one", "Data", func(s api.Service) api.Service { return offByOneRead{s} }},
		{"read off by one, under snapshots", "Snapshots", func(s api.Service) api.Service { return offByOneRead{s} }},
		{"region users not shown", "Pmem", func(s api.Service) api.Service { return noUsers{s} }},
		{"empty name accepted", "BadInput", func(s api.Service) api.Service { return acceptsEmptyName{s} }},
		{"phantom session", "Sessions", func(s api.Service) api.Service { return phantomSession{s} }},
		{"rename answers the old name", "DeviceLifecycle", func(s api.Service) api.Service { return staleRename{s} }},
		{"other API version", "Version", func(s api.Service) api.Service { return oldVersion{s} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, _ := startDaemon(t)
			r := runCheck(t, c.check, c.wrap(d.Service()))
			if !r.Failed() {
				t.Errorf("%s passed a service whose %s", c.check, c.name)
			}
		})
	}
}

// runCheck runs the named check on svc with a recorder.
func runCheck(t *testing.T, name string, svc api.Service) *recorder {
	t.Helper()
	i := slices.IndexFunc(apitest.Checks(), func(c apitest.Check) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("no check named %s", name)
	}
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		apitest.Checks()[i].Fn(r, svc)
	}()
	<-done
	return r
}

// recorder is a testing.TB that records failures instead of reporting
// them; Fatal ends the check's goroutine, as in a real test.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	failed bool
}

func (r *recorder) Helper()                           {}
func (r *recorder) Log(args ...any)                   {}
func (r *recorder) Logf(format string, args ...any)   {}
func (r *recorder) Error(args ...any)                 { r.Fail() }
func (r *recorder) Errorf(format string, args ...any) { r.Fail() }
func (r *recorder) Fatal(args ...any)                 { r.FailNow() }
func (r *recorder) Fatalf(format string, args ...any) { r.FailNow() }
func (r *recorder) FailNow()                          { r.Fail(); runtime.Goexit() }
func (r *recorder) Failed() bool                      { r.mu.Lock(); defer r.mu.Unlock(); return r.failed }

func (r *recorder) Fail() {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
}
