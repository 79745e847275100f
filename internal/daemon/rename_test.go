package daemon_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that renaming an origin renames its snapshot layout with it, as
// lvrename does: the snapshots stay its snapshots, tables name the new
// devices, a new snapshot of it can be made, and all of it survives a
// restart.
func TestRename_originKeepsItsSnapshots(t *testing.T) {
	e := newEnv(t)
	const size = 4 * mib
	e.fileVol("vol", size)
	a, b, c := bytes.Repeat([]byte{0xa}, size), bytes.Repeat([]byte{0xb}, size), bytes.Repeat([]byte{0xc}, size)
	e.write("vol", 0, a)
	e.snap("vol", "s1")
	e.write("vol", 0, b)

	if _, err := e.c.Rename(bg, "vol", wire.Rename{NewName: "volX"}); err != nil {
		t.Fatalf("rename vol volX: %v", err)
	}
	check := func(when string, snaps map[string][]byte) {
		t.Helper()
		e.wantDevices(append([]string{"volX", "volX-real"}, keys(snaps)...)...)
		if got := e.table("volX", false); !strings.Contains(got, "snapshot-origin /dev/mapper/volX-real") {
			t.Fatalf("%s: table of volX %q, want snapshot-origin over /dev/mapper/volX-real", when, got)
		}
		list := e.snapList("")
		if len(list) != len(snaps) {
			t.Fatalf("%s: snapshot list %+v, want %v", when, list, keys(snaps))
		}
		for _, s := range list {
			if s.Origin != "volX" || s.State != wire.SnapshotActive {
				t.Fatalf("%s: snapshot %s has origin %q, state %s; want volX, active", when, s.Name, s.Origin, s.State)
			}
			if got := e.table(s.Name, false); !strings.Contains(got, "snapshot /dev/mapper/volX-real ") {
				t.Fatalf("%s: table of %s %q, want it over /dev/mapper/volX-real", when, s.Name, got)
			}
			e.wantData(s.Name, snaps[s.Name])
		}
		if l := e.snapList("volX"); len(l) != len(snaps) {
			t.Fatalf("%s: snapshot list volX: %+v", when, l)
		}
	}
	check("after rename", map[string][]byte{"s1": a})
	e.wantData("volX", b)

	e.snap("volX", "s2")
	e.write("volX", 0, c)
	check("after a second snapshot", map[string][]byte{"s1": a, "s2": b})
	e.wantData("volX", c)

	e.restart()
	check("after restart", map[string][]byte{"s1": a, "s2": b})
	e.wantData("volX", c)

	// The layout comes apart under its new names.
	e.must("snapshot remove s1", e.c.SnapshotRemove(bg, "s1"))
	e.must("snapshot remove s2", e.c.SnapshotRemove(bg, "s2"))
	e.wantDevices("volX")
	e.wantData("volX", c)
}

// Ensure that a device other tables map can be renamed, as in the kernel:
// the tables keep working, print the new name, and are restored with it.
func TestRename_deviceUnderAnotherTable(t *testing.T) {
	e := newEnv(t)
	e.fileVol("base", mib)
	e.create("top", "0 2048 linear /dev/mapper/base 0")
	data := bytes.Repeat([]byte("renamed"), 1000)
	e.write("top", 4096, data)

	if _, err := e.c.Rename(bg, "base", wire.Rename{NewName: "base2"}); err != nil {
		t.Fatalf("rename base base2 under top: %v", err)
	}
	want := "0 2048 linear /dev/mapper/base2 0\n"
	if got := e.table("top", false); got != want {
		t.Fatalf("table of top after rename: %q, want %q", got, want)
	}
	if got := e.read("top", 4096, int64(len(data))); !bytes.Equal(got, data) {
		t.Fatal("top reads other data after its device was renamed")
	}
	e.write("top", 0, data)
	err := e.c.Remove(bg, "base2", wire.Remove{})
	wantCode(t, err, wire.CodeBusy, "top", "/dev/mapper/base2")

	e.restart()
	if got := e.table("top", false); got != want {
		t.Fatalf("table of top after restart: %q, want %q", got, want)
	}
	if got := e.read("base2", 0, int64(len(data))); !bytes.Equal(got, data) {
		t.Fatal("base2 lost data written through top")
	}
	e.wantDevices("base2", "top")
}

// Ensure that renames that would break a snapshot layout are refused and
// say what to do instead.
func TestRename_keepsLayoutsWhole(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", mib)
	e.snap("vol", "s1")
	e.create("other", "0 8 zero")

	_, err := e.c.Rename(bg, "vol-real", wire.Rename{NewName: "x"})
	wantCode(t, err, wire.CodeInvalidArgument, "snapshot layout of origin vol", "rename vol")
	_, err = e.c.Rename(bg, "other", wire.Rename{NewName: "vol-merge"})
	wantCode(t, err, wire.CodeInvalidArgument, "kept for the snapshot layout of origin vol")
	e.create("new-real", "0 8 zero")
	_, err = e.c.Rename(bg, "vol", wire.Rename{NewName: "new"})
	wantCode(t, err, wire.CodeExists, "new-real")
	e.wantDevices("vol", "vol-real", "s1", "other", "new-real")
	if l := e.snapList("vol"); len(l) != 1 {
		t.Fatalf("snapshots of vol after refused renames: %+v", l)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Ensure that a renamed snapshot keeps its COW file, and that its old
// name can take a new snapshot, with a COW file of its own, across a
// restart.
func TestRename_snapshotNameReused(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", mib)
	a, b := bytes.Repeat([]byte{1}, mib), bytes.Repeat([]byte{2}, mib)
	e.write("vol", 0, a)
	first := e.snap("vol", "s1")
	if _, err := e.c.Rename(bg, "s1", wire.Rename{NewName: "old"}); err != nil {
		t.Fatal(err)
	}
	e.write("vol", 0, b)
	second := e.snap("vol", "s1")
	if second.COW == first.COW {
		t.Fatalf("the new s1 got the COW file %s that old still uses", second.COW)
	}
	e.write("vol", 0, make([]byte, mib))
	e.restart()
	e.wantData("old", a)
	e.wantData("s1", b)
	if got, _ := e.c.Snapshot(bg, "old"); got.COW != first.COW || got.Origin != "vol" {
		t.Fatalf("old after restart: %+v, want COW %s of vol", got, first.COW)
	}
}

// Ensure that the kept table of a degraded device (a table that did not
// load at start, kept for the next one) holds the devices it names as a
// loaded table does: they are not removed from under it, and renaming one
// rewrites the record too, so the table loads over the renamed device at
// the next start.
func TestRename_deviceUnderKeptTable(t *testing.T) {
	e := newEnv(t)
	path := e.region("r", mib)
	e.create("low", "0 8 zero")
	e.create("top", "0 8 linear /dev/mapper/low 0\n8 8 "+strings.TrimPrefix(linear(path, 8), "0 8 "))
	e.stop()
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	e.start()
	if in := e.info("top"); !strings.Contains(in.Note, "did not load") {
		t.Fatalf("top without its region file: %+v, want it degraded", in)
	}
	err := e.c.Remove(bg, "low", wire.Remove{})
	wantCode(t, err, wire.CodeBusy, "the tables of top map /dev/mapper/low")
	if _, err := e.c.Rename(bg, "low", wire.Rename{NewName: "low2"}); err != nil {
		t.Fatalf("rename low low2 under top's kept table: %v", err)
	}
	e.stop()
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	e.start()
	want := "0 8 linear /dev/mapper/low2 0\n8 8 " + strings.TrimPrefix(linear(path, 8), "0 8 ") + "\n"
	if got := e.table("top", false); got != want {
		t.Fatalf("top's table after the rename and a restart: %q (note %q), want %q", got, e.info("top").Note, want)
	}
	e.wantDevices("low2", "top")
}
