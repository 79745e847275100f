package daemon_test

import (
	"bytes"
	"errors"
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

// asNobody runs a shell script as uid 65534 and fails the test if it fails.
func asNobody(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid 65534: %s: %v (%s)", script, err, out)
	}
}

// sharedDir makes a directory on /dev/shm that, like /dev/shm itself,
// every user may write (mode 1777).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := pmemDir(t)
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Ensure that a region directory another user made first (the squat of
// /dev/shm/daxsnap) is refused, whether it is theirs, writable by others
// or a link, and that nothing lands in it; that the daemon makes its own
// 0700 and removes it with the last region.
func TestRegionDir_squatRefused(t *testing.T) {
	testutil.RequireRoot(t)
	shm := sharedDir(t)
	sub := filepath.Join(shm, daemon.RegionSubdir)
	e := newEnv(t)
	for _, squat := range []struct{ script, says string }{
		{"mkdir " + sub + " && chmod 0777 " + sub, "is owned by uid 65534, not by the daemon's uid 0"},
		{"mkdir -m 0700 " + sub, "is owned by uid 65534"},
		{"ln -s /tmp " + sub, "is a symbolic link"},
	} {
		asNobody(t, squat.script)
		_, err := e.c.PmemCreate(bg, wire.PmemCreate{Name: "fast", Size: 1 << 20, Dir: shm})
		wantCode(t, err, wire.CodeInvalidArgument, squat.says, "remove it", "--dir")
		if _, err := os.Lstat(filepath.Join(sub, "fast")); !os.IsNotExist(err) {
			t.Errorf("after a refused create: %s/fast: %v, want none", sub, err)
		}
		if err := os.RemoveAll(sub); err != nil {
			t.Fatal(err)
		}
	}
	// Root's own directory, but writable by others: refused too.
	if err := os.Mkdir(sub, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(sub, 0o777)
	_, err := e.c.PmemCreate(bg, wire.PmemCreate{Name: "fast", Size: 1 << 20, Dir: shm})
	wantCode(t, err, wire.CodeInvalidArgument, "has mode 0777", "users other than its owner may write it")
	os.Remove(sub)

	p, err := e.c.PmemCreate(bg, wire.PmemCreate{Name: "fast", Size: 1 << 20, Dir: shm})
	e.must("pmem create", err)
	fi, err := os.Lstat(sub)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("region directory: %v, %v; want a 0700 directory of uid 0", fi, err)
	}
	if filepath.Dir(p.Path) != sub {
		t.Fatalf("region at %s, want it in %s", p.Path, sub)
	}
	e.must("pmem remove", e.c.PmemRemove(bg, "fast"))
	if _, err := os.Lstat(sub); !os.IsNotExist(err) {
		t.Errorf("region directory after its last region's removal: %v, want it removed", err)
	}
}

// Ensure that a region file swapped for another user's file (the rest of
// the squat) is refused at the next start, as a plain file or a link: the
// device on it serves errors with a note, `pmem list` says why, and
// nothing is written to the other user's file.
func TestRegionDir_swappedFileRefused(t *testing.T) {
	testutil.RequireRoot(t)
	const size = 1 << 20
	theirs := sharedDir(t)
	for _, how := range []string{"file", "link"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			path := e.region("fast", size)
			e.create("secretvol", linear(path, size/512))
			e.write("secretvol", 0, []byte("before"))
			e.stop()
			// uid 65534 makes a file of its own; it is put in the
			// region's place (a squatted directory let them do that).
			bait := filepath.Join(theirs, "bait-"+how)
			asNobody(t, "head -c 1048576 /dev/zero > "+bait)
			var err error
			if how == "file" {
				err = os.Rename(bait, path)
				bait = path
			} else {
				err = errors.Join(os.Remove(path), os.Symlink(bait, path))
			}
			if err != nil {
				t.Fatal(err)
			}
			e.start()
			in := e.info("secretvol")
			if !strings.Contains(in.Note, "serves an `error` table") || !strings.Contains(in.Note, "region fast") && !strings.Contains(in.Note, "symbolic link") {
				t.Errorf("secretvol's note %q, want it serving errors because region fast's file was refused", in.Note)
			}
			if err := e.c.WriteData(bg, "secretvol", 0, []byte("secret")); err == nil {
				t.Errorf("write to secretvol over a swapped region file succeeded")
			}
			ps, err := e.c.PmemList(bg)
			if err != nil || len(ps) != 1 || !strings.Contains(ps[0].Note, "file refused") {
				t.Errorf("pmem list: %+v, %v; want fast with a note that its file is refused", ps, err)
			}
			got, err := os.ReadFile(bait)
			if err != nil || !bytes.Equal(got, make([]byte, size)) {
				t.Errorf("uid 65534's file changed: %q..., %v", got[:min(len(got), 16)], err)
			}
			if !strings.Contains(e.logs.String(), "pmem region file refused") {
				t.Errorf("no log line refusing the region file")
			}
		})
	}
}

// Ensure that --dir must be a tmpfs or hugetlbfs meant for files: not
// the tmpfs of cgroup v1's /sys/fs/cgroup, nor devtmpfs (/dev), which
// reports tmpfs's magic.
func TestRegionDir_kernelMountsRefused(t *testing.T) {
	testutil.RequireRoot(t)
	e := newEnv(t)
	for _, dir := range []string{"/sys/fs/cgroup", "/dev"} {
		var st syscall.Statfs_t
		if syscall.Statfs(dir, &st) != nil || st.Type != 0x01021994 {
			continue // not a tmpfs-looking mount here: nothing to refuse
		}
		sub := filepath.Join(dir, daemon.RegionSubdir)
		if _, err := os.Lstat(sub); os.IsNotExist(err) {
			t.Cleanup(func() { os.RemoveAll(sub) }) // only if this test made it
		}
		_, err := e.c.PmemCreate(bg, wire.PmemCreate{Name: "k", Size: 1 << 20, Dir: dir})
		wantCode(t, err, wire.CodeInvalidArgument, dir)
		e.c.PmemRemove(bg, "k")
	}
}
