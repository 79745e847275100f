package fusefs_test

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
	"github.com/daxsnap/daxsnap/internal/target/all"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

const mib = 1 << 20

// rig is a manager over in-memory backing devices "a" and "b" (4 MiB
// each), exported on a FUSE mount in a temporary directory.
type rig struct {
	t    *testing.T
	m    *dm.Manager
	a, b *backingtest.Mem
	srv  *fusefs.Server
	dir  string
	// closed: the test closed srv itself, and checked what Close said.
	closed bool
}

func requireFUSE(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testutil.Skip(t, "no /dev/fuse: modprobe fuse")
	}
}

func newRig(t *testing.T, opts fusefs.Options) *rig {
	t.Helper()
	requireFUSE(t)
	r := &rig{t: t, a: backingtest.NewMem("a", 4*mib, backing.DAX), b: backingtest.NewMem("b", 4*mib, 0)}
	reg := dm.NewRegistry()
	all.Register(reg)
	r.m = dm.NewManager(reg, dm.NewDevicePool(backingtest.Opener(r.a, r.b)))
	r.dir = filepath.Join(t.TempDir(), "mnt")
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := fusefs.Mount(r.dir, r.m, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	r.srv = srv
	t.Cleanup(func() {
		if err := srv.Close(); err != nil && !r.closed {
			t.Errorf("close: %v", err)
		}
		syscall.Unmount(r.dir, syscall.MNT_DETACH) // in case Close failed
	})
	return r
}

func (r *rig) create(name, table string, ro bool) *dm.Device {
	r.t.Helper()
	d, err := r.m.Create(name, dm.CreateOptions{Table: table, ReadOnly: ro})
	if err != nil {
		r.t.Fatalf("create %s: %v", name, err)
	}
	return d
}

func (r *rig) path(name string) string { return filepath.Join(r.dir, name) }

func (r *rig) open(name string, flag int) *os.File {
	r.t.Helper()
	f, err := os.OpenFile(r.path(name), flag, 0)
	if err != nil {
		r.t.Fatalf("open %s: %v", name, err)
	}
	r.t.Cleanup(func() { f.Close() })
	return f
}

// waitOpenCount waits for dev's open count to be want: the kernel
// releases a file a moment after its last close.
func waitOpenCount(t *testing.T, dev *dm.Device, want int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for dev.Info().OpenCount != want {
		if time.Now().After(deadline) {
			t.Fatalf("open count of %s is %d after a minute, want %d", dev.Name(), dev.Info().OpenCount, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: err = %v, want %v", what, err, want)
	}
}

// get and put read and write backing device "a" under its lock, as the
// FUSE server's goroutines do (the race detector cannot see the kernel
// ordering them).
func (r *rig) get(off int64, n int) []byte {
	r.t.Helper()
	b := make([]byte, n)
	if _, err := r.a.ReadAt(b, off); err != nil {
		r.t.Fatal(err)
	}
	return b
}

func (r *rig) put(off int64, p []byte) {
	r.t.Helper()
	if _, err := r.a.WriteAt(p, off); err != nil {
		r.t.Fatal(err)
	}
}
