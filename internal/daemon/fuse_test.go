package daemon_test

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// newFUSEEnv is newEnv with the FUSE export mounted on <state>/fuse.
func newFUSEEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testutil.Skip(t, "no /dev/fuse: modprobe fuse")
	}
	logs := &testutil.LogBuffer{}
	state := t.TempDir()
	e := &env{t: t, logs: logs, cfg: daemon.Config{
		StateDir: state,
		PmemDir:  pmemDir(t),
		FUSEDir:  filepath.Join(state, daemon.FUSEDirName),
		Version:  "test",
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}}
	e.start()
	t.Cleanup(func() {
		e.stop()
		syscall.Unmount(e.cfg.FUSEDir, syscall.MNT_DETACH) // if the stop failed
		if t.Failed() {
			t.Logf("daemon logs:\n%s", logs)
		}
	})
	if e.d.FUSEDir() == "" {
		t.Fatalf("FUSE export not mounted:\n%s", logs)
	}
	return e
}

// losetup attaches file to a free loop device (read-only with ro) and
// detaches it when the test ends, unless the test did.
func losetup(t *testing.T, file string, ro bool) *testutil.Loop {
	t.Helper()
	if ro {
		return testutil.AttachLoop(t, file, "-r")
	}
	return testutil.AttachLoop(t, file)
}

// detach detaches l now, failing the test if it cannot.
func detach(t *testing.T, l *testutil.Loop) {
	t.Helper()
	if err := l.Detach(); err != nil {
		t.Fatal(err)
	}
}

// mountAt mounts dev on a new directory, unmounted (lazily, if need be)
// when the test ends.
func mountAt(t *testing.T, dev string, opts ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", append(append([]string{}, opts...), dev, dir)...)
	t.Cleanup(func() {
		exec.Command("fsfreeze", "-u", dir).Run()
		exec.Command("umount", "-l", dir).Run()
	})
	return dir
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// ext4Snapshot makes ext4 on FUSE file file (of vol) through a loop
// device, mounts it and writes files; then takes snapshot snap of vol
// with the file system frozen, and changes a file and writes another.
// It returns the loop device, the mount point and the files as they are
// in the snapshot.
func (e *env) ext4Snapshot(file, snap string) (loop *testutil.Loop, mnt string, before map[string][]byte) {
	t := e.t.(*testing.T)
	t.Helper()
	loop = losetup(t, file, false)
	e.waitOpenCount("vol", 1)
	run(t, "mkfs.ext4", "-q", loop.Dev)
	mnt = mountAt(t, loop.Dev)
	before = map[string][]byte{"a": randomBytes(3 * mib), "dir/b": []byte("written before the snapshot\n")}
	for name, data := range before {
		writeFile(t, filepath.Join(mnt, name), data)
	}
	run(t, "sync")

	run(t, "fsfreeze", "-f", mnt)
	e.snap("vol", snap, func(r *wire.SnapshotCreate) { r.COWSize = 32 * mib })
	run(t, "fsfreeze", "-u", mnt)

	writeFile(t, filepath.Join(mnt, "a"), randomBytes(3*mib)) // after the snapshot
	writeFile(t, filepath.Join(mnt, "c"), []byte("written after the snapshot\n"))
	run(t, "sync")
	return loop, mnt, before
}

// Ensure that kernel file systems run on daxsnap volumes through the
// FUSE export and losetup: mkfs.ext4, mount, files, fsck clean; and
// that a snapshot taken with the file system frozen (fsfreeze) is a
// clean ext4 image holding exactly what was written before it, while
// the origin goes on changing. Loop-attached files hold their devices
// open, as any block device user does.
func TestDaemon_fuseLoopExt4(t *testing.T) {
	testutil.RequireTool(t, "losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "fsfreeze")
	e := newFUSEEnv(t)
	const size = 64 * mib
	e.pmemVol("vol", size)
	file := filepath.Join(e.d.FUSEDir(), "vol")
	if fi, err := os.Stat(file); err != nil || fi.Size() != size || fi.Mode() != 0o600 {
		t.Fatalf("stat %s: %v, %v; want %d bytes, mode 0600", file, fi, err, size)
	}

	loop, mnt, before := e.ext4Snapshot(file, "snap1")

	snapLoop := losetup(t, filepath.Join(e.d.FUSEDir(), "snap1"), true)
	e.waitOpenCount("snap1", 1)
	run(t, "e2fsck", "-fn", snapLoop.Dev)
	snapMnt := mountAt(t, snapLoop.Dev, "-o", "ro")
	for name, want := range before {
		got, err := os.ReadFile(filepath.Join(snapMnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s in the snapshot: %v, equal to what was written before it: %v", name, err, bytes.Equal(got, want))
		}
	}
	if _, err := os.Stat(filepath.Join(snapMnt, "c")); !os.IsNotExist(err) {
		t.Errorf("a file written after the snapshot is in it: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(mnt, "a")); bytes.Equal(got, before["a"]) {
		t.Error("the origin lost the change made after the snapshot")
	}
	err := e.c.Remove(bg, "snap1", wire.Remove{})
	wantCode(t, err, wire.CodeBusy, "open")

	run(t, "umount", snapMnt)
	detach(t, snapLoop)
	e.waitOpenCount("snap1", 0)
	run(t, "umount", mnt)
	run(t, "e2fsck", "-fn", loop.Dev)
	detach(t, loop)
	e.waitOpenCount("vol", 0)
}

// Ensure that a FUSE mount point that cannot be mounted is a warning,
// not a failed start: the daemon serves without it.
func TestDaemon_fuseUnavailable(t *testing.T) {
	e := newEnv(t)
	e.stop()
	e.cfg.FUSEDir = "/dev/null/fuse"
	e.start()
	if dir := e.d.FUSEDir(); dir != "" {
		t.Fatalf("FUSEDir = %q, want none", dir)
	}
	if !strings.Contains(e.logs.String(), "FUSE export off") {
		t.Errorf("no warning logged:\n%s", e.logs)
	}
	e.create("vol", "0 8 zero")
}

// Ensure that ORIGIN-real's device file has no write bits and refuses
// root's writes: it bypasses the origin's snapshots.
func TestDaemon_fuseRealReadOnly(t *testing.T) {
	e := newFUSEEnv(t)
	path := e.region("o", 4*mib)
	e.create("vol", linear(path, 4096))
	e.snap("vol", "s1")
	file := filepath.Join(e.cfg.FUSEDir, "vol-real")
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("vol-real file: %v, %v; want no write bits", fi.Mode(), err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteAt(make([]byte, 4096), 0)
		f.Close()
	}
	if err == nil {
		t.Fatal("root wrote vol-real through the FUSE export")
	}
	if fi, err := os.Stat(filepath.Join(e.cfg.FUSEDir, "vol")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("vol file: %v, %v; want 0600", fi, err)
	}
}
