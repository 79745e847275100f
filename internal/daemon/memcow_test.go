package daemon_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that without --cow-dir a snapshot of a memory origin gets its
// COW on tmpfs, in a 0700 directory of the daemon's own, and says so,
// while a snapshot of a file origin keeps its COW in STATE/cow; both are
// the daemon's, deleted with their snapshots.
func TestSnapshot_memoryOriginCOWOnTmpfs(t *testing.T) {
	e := newEnv(t)
	e.pmemVol("mem", volSize)
	e.fileVol("disk", volSize)
	m := e.snap("mem", "m1")
	if filepath.Dir(m.COW) != e.memCOWDir() || !m.COWOwned || !strings.Contains(m.Note, "on tmpfs") || !strings.Contains(m.Note, m.COW) {
		t.Fatalf("snapshot of a memory origin: COW %s (owned %v), note %q; want it in %s, said in the note", m.COW, m.COWOwned, m.Note, e.memCOWDir())
	}
	if fi, err := os.Lstat(e.memCOWDir()); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("memory COW directory: %v, %v; want a 0700 directory", fi, err)
	}
	d := e.snap("disk", "d1")
	if d.COW != filepath.Join(e.cfg.StateDir, snapshots.COWSubdir, "d1.cow") || strings.Contains(d.Note, "tmpfs") {
		t.Fatalf("snapshot of a file origin: COW %s, note %q; want STATE/cow/d1.cow", d.COW, d.Note)
	}
	// A second snapshot of the memory origin stacks on mem-real: still memory.
	m2 := e.snap("mem", "m2", func(r *wire.SnapshotCreate) { r.COWSize = 8 << 20 })
	if filepath.Dir(m2.COW) != e.memCOWDir() || !strings.Contains(m2.Note, m2.COW) {
		t.Fatalf("second snapshot of the memory origin, --cow-size given: COW %s, note %q", m2.COW, m2.Note)
	}
	for _, s := range e.snapList("") {
		if s.Name == "m1" && s.COW != m.COW {
			t.Fatalf("snapshot list shows m1's COW as %s, not %s", s.COW, m.COW)
		}
	}
	a := bytes.Repeat([]byte{0xaa}, 8192)
	e.write("mem", 0, a)
	if got := e.read("m1", 0, 8192); bytes.Equal(got, a) {
		t.Fatal("m1 shows the origin's write made after it")
	}
	for _, n := range []string{"m1", "m2", "d1"} {
		e.must("snapshot remove "+n, e.c.SnapshotRemove(bg, n))
	}
	if f := e.cowFiles(); len(f) != 0 {
		t.Fatalf("COW files left after the snapshots were removed: %v", f)
	}
}

// Ensure that --cow-dir still takes every COW, memory origins' too.
func TestSnapshot_cowDirOverridesMemory(t *testing.T) {
	dir := t.TempDir()
	e := newEnvWith(t, func(c *daemon.Config) { c.COWDir = dir })
	e.pmemVol("mem", volSize)
	if m := e.snap("mem", "m1"); filepath.Dir(m.COW) != dir || strings.Contains(m.Note, "tmpfs") {
		t.Fatalf("with --cow-dir %s: COW %s, note %q", dir, m.COW, m.Note)
	}
	if _, err := os.Lstat(e.memCOWDir()); err == nil {
		t.Fatalf("the daemon made %s though --cow-dir was given", e.memCOWDir())
	}
}

// Ensure that two daemons with different state directories on one tmpfs
// keep apart: the start of one tidies only its own memory COW directory
// (a stray file there goes to its lost+found) and leaves the other's
// COWs, in use by the other's snapshots, where they are.
func TestSnapshot_memCOWTwoDaemons(t *testing.T) {
	a := newEnv(t)
	a.pmemVol("vol", volSize)
	s := a.snap("vol", "s1")
	data := bytes.Repeat([]byte{0x5a}, 4096)
	a.write("vol", 0, data) // s1's COW now holds the old chunk

	b := newEnvWith(t, func(c *daemon.Config) { c.PmemDir = a.cfg.PmemDir })
	b.pmemVol("bvol", volSize)
	b.snap("bvol", "b1")
	stray := filepath.Join(b.memCOWDir(), "stray.cow")
	if err := os.WriteFile(stray, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	b.restart()
	if _, err := os.Stat(filepath.Join(b.memCOWDir(), snapshots.LostFoundDir, "stray.cow")); err != nil {
		t.Fatalf("b's start did not move its stray COW to its memory COW directory's lost+found: %v (b's COW files: %v)", err, b.cowFiles())
	}
	if _, err := os.Stat(s.COW); err != nil {
		t.Fatalf("b's start moved a's COW %s: %v", s.COW, err)
	}
	if lost, _ := os.ReadDir(filepath.Join(a.memCOWDir(), snapshots.LostFoundDir)); len(lost) != 0 {
		t.Fatalf("a's lost+found holds %d files after b's start", len(lost))
	}
	if got := a.read("s1", 0, 4096); bytes.Equal(got, data) {
		t.Fatal("a's snapshot lost its data after b's start")
	}
	a.restart()
	if f := a.cowFiles(); strings.Join(f, " ") != "s1.cow" {
		t.Fatalf("a's COW files after its restart: %v, want s1.cow", f)
	}
	if _, err := os.Stat(filepath.Join(b.memCOWDir(), "b1.cow")); err != nil {
		t.Fatalf("a's start moved b's COW: %v", err)
	}
}

// Ensure that a snapshot of a memory origin whose COW a reboot emptied
// (tmpfs lost it, the origin came back from elsewhere) comes back as a
// snapshot that says what is wrong, not a panic or a silent snapshot of
// the origin's current data; removing it works.
func TestSnapshot_memCOWLostAtReboot(t *testing.T) {
	e := newEnv(t)
	e.pmemVol("vol", volSize)
	s := e.snap("vol", "s1")
	e.stop()
	if err := os.RemoveAll(e.memCOWDir()); err != nil {
		t.Fatal(err)
	}
	e.start()
	got, err := e.c.Snapshot(bg, "s1")
	if err != nil {
		t.Fatalf("snapshot info s1 after its COW was lost: %v", err)
	}
	if got.State == wire.SnapshotActive {
		t.Fatalf("snapshot s1 whose COW %s is gone: %+v; want it not active", s.COW, got)
	}
	if in := e.info("s1"); !strings.Contains(in.Note+got.Note, s.COW) {
		t.Fatalf("nothing says s1's COW %s is missing: info note %q, snapshot note %q, state %s", s.COW, in.Note, got.Note, got.State)
	}
	if _, err := e.c.ReadData(bg, "s1", 0, 4096); err == nil {
		t.Fatal("s1 reads without its COW")
	}
	e.must("snapshot remove s1", e.c.SnapshotRemove(bg, "s1"))
	e.wantDevices("vol")
}
