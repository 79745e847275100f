package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/snapshots"
)

// cleanMemCOWDir removes, after the test, the directory on /dev/shm
// where a `daxsnap serve --state state` without --cow-dir puts the COWs
// of memory origins.
func cleanMemCOWDir(t *testing.T, state string) {
	dir := snapshots.MemCOWDirIn(daemon.DefaultPmemDir, state)
	t.Cleanup(func() { os.RemoveAll(dir) })
}

// Ensure that `serve --cow-dir DIR` makes the COW files of snapshots
// taken without --cow in DIR, deletes them with their snapshot, and at
// the next start moves a COW file there that no snapshot uses to
// DIR/lost+found (on DIR's file system, so that it is a rename).
func TestCLI_serveCOWDir(t *testing.T) {
	state, cows := t.TempDir(), filepath.Join(t.TempDir(), "cows")
	shm, err := os.MkdirTemp("/dev/shm", "daxsnap-cowdir-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	sock := filepath.Join(state, "daxsnap.sock")
	start := func() (func(), *strings.Builder) {
		serve, stderr := daxsnapProcess(t, "serve", "--state", state, "--cow-dir", cows, "--fuse", "")
		waitFor(t, "the control socket", func() bool {
			code, _, _ := runIn("", "--socket", sock, "version")
			return code == 0
		})
		return func() {
			serve.Process.Signal(syscall.SIGTERM)
			if err := serve.Wait(); err != nil {
				t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr)
			}
		}, stderr
	}
	stop, _ := start()
	c := &cli{t: t, socket: sock}
	out := c.ok("pmem", "create", "r", "--size", "4M", "--dir", shm)
	_, region, _ := strings.Cut(strings.TrimSpace(out), " at ")
	c.ok("create", "vol", "--table", "0 8192 linear "+region+" 0")
	if out := c.ok("snapshot", "create", "vol", "s1", "--cow-size", "1M"); !strings.Contains(out, "COW "+filepath.Join(cows, "s1.cow")) {
		t.Fatalf("snapshot create with serve --cow-dir %s: %q", cows, out)
	}
	if _, err := os.Stat(filepath.Join(state, "cow", "s1.cow")); err == nil {
		t.Fatal("the COW file is in STATE/cow too")
	}
	c.ok("snapshot", "remove", "s1")
	if _, err := os.Stat(filepath.Join(cows, "s1.cow")); !os.IsNotExist(err) {
		t.Fatalf("the COW file of a removed snapshot: %v, want it deleted", err)
	}
	os.WriteFile(filepath.Join(cows, "stray.cow"), make([]byte, 8192), 0o600)
	stop()

	stop, stderr := start()
	stop()
	if _, err := os.Stat(filepath.Join(cows, "lost+found", "stray.cow")); err != nil {
		t.Fatalf("a COW file no snapshot uses, at the next start: %v; want it in %s/lost+found\n%s", err, cows, stderr)
	}
}
