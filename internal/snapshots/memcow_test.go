package snapshots

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Ensure that the memory COW directory, on a tmpfs anyone may write, is
// used only as a 0700 directory of the daemon's uid: a link or a
// directory others may read or write that someone made first is refused
// with what to do, and one of another daemon's state directory has
// another name.
func TestEnsureOwnDir(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "daxsnap-test-")
	if err != nil {
		testutil.Skip(t, "no /dev/shm: "+err.Error())
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	dir := MemCOWDirIn(shm, "/state/a")
	if dir == MemCOWDirIn(shm, "/state/b") || dir != MemCOWDirIn(shm, "/state/x/../a") {
		t.Fatalf("MemCOWDirIn: one name per state directory, got %s for /state/a", dir)
	}
	if err := ensureOwnDir(dir); err != nil {
		t.Fatalf("fresh directory: %v", err)
	}
	if fi, err := os.Lstat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("made %v, %v; want 0700", fi, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ensureOwnDir(dir); err == nil || !strings.Contains(err.Error(), "mode 0755") || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("0755 directory: %v", err)
	}
	link := filepath.Join(shm, "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	if err := ensureOwnDir(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symbolic link: %v", err)
	}
}

// Ensure that the daemon looks only into a memory COW directory of its
// own: at start it moves the files of its COW directories that no
// snapshot uses, so a link someone put at the directory's predictable
// name on /dev/shm before the daemon made it would have the daemon move
// the files it points to (its own COW directory's, or /etc's for root).
func TestCOWDirs_notAnotherOwnersMemoryDir(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "daxsnap-test-")
	if err != nil {
		testutil.Skip(t, "no /dev/shm: "+err.Error())
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	victim := t.TempDir()
	if err := os.WriteFile(filepath.Join(victim, "passwd"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mem := MemCOWDirIn(shm, "/state")
	if err := os.Symlink(victim, mem); err != nil {
		t.Fatal(err)
	}
	mg := &Manager{cfg: Config{Dir: t.TempDir(), MemCOWDir: mem}}
	for _, d := range mg.cowDirs() {
		if d == mem {
			t.Fatalf("COW directories %q include %s, a link to %s", mg.cowDirs(), mem, victim)
		}
	}
	if mg.ownsCOW(filepath.Join(mem, "passwd")) {
		t.Fatal("a file behind the link counts as a COW file the daemon created (it would delete it)")
	}
	if err := os.Remove(mem); err != nil {
		t.Fatal(err)
	}
	if err := ensureOwnDir(mem); err != nil {
		t.Fatal(err)
	}
	if got := mg.cowDirs(); len(got) != 2 || got[1] != mem {
		t.Fatalf("COW directories %q, want the state's and %s once the daemon made it", got, mem)
	}
}
