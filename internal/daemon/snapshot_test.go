package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/wire"
)

const volSize = 4 * mib

// Ensure that snapshot create lays devices out as LVM does, that a
// snapshot keeps the origin's data of its time while both are written,
// and that removing the last snapshot gives the origin its table back.
func TestSnapshot_createWriteRemove(t *testing.T) {
	e := newEnv(t)
	path := e.fileVol("vol", volSize)
	r := rand.New(rand.NewPCG(1, 2))
	a := randBytes(r, volSize)
	e.write("vol", 0, a)

	s := e.snap("vol", "s1")
	if s.Origin != "vol" || s.Store != "P" || s.ChunkSize != 4096 || !s.COWOwned || s.State != wire.SnapshotActive ||
		s.COW != filepath.Join(e.cfg.StateDir, snapshots.COWSubdir, "s1.cow") || !strings.Contains(s.Note, "10% of the origin") {
		t.Fatalf("created: %+v", s)
	}
	e.wantDevices("vol", "vol-real", "s1")
	for name, want := range map[string]string{
		"vol-real": linear(path, volSize/512) + "\n",
		"vol":      fmt.Sprintf("0 %d snapshot-origin /dev/mapper/vol-real\n", volSize/512),
		"s1":       fmt.Sprintf("0 %d snapshot /dev/mapper/vol-real %s P 8\n", volSize/512, s.COW),
	} {
		if got := e.table(name, false); got != want {
			t.Fatalf("%s table = %q, want %q", name, got, want)
		}
	}
	// 10% of 4 MiB is below the 8 MiB floor, which is more than a full
	// copy takes: header, 1024 data chunks and their 4+1 metadata areas.
	if fi, err := os.Stat(s.COW); err != nil || fi.Size() != (1+1024+5)*4096 {
		t.Fatalf("COW file: %v, %v; want a full copy's size", fi, err)
	}

	b := bytes.Clone(a)
	copy(b[8192:], bytes.Repeat([]byte{0xbb}, 10000))
	e.write("vol", 8192, b[8192:8192+10000])
	e.wantData("vol", b)
	e.wantData("s1", a)
	// A write to the snapshot changes only the snapshot.
	s1 := bytes.Clone(a)
	copy(s1[100000:], []byte("snapshot only"))
	e.write("s1", 100000, []byte("snapshot only"))
	e.wantData("s1", s1)
	e.wantData("vol", b)
	if l := e.snapList("vol"); len(l) != 1 || l[0].Exceptions != 4 || l[0].Allocated != 6*8 || l[0].Usage <= 0 {
		t.Fatalf("list: %+v; want 4 exceptions (3 chunks of origin writes, 1 of the snapshot write)", l)
	}

	e.must("remove", e.c.SnapshotRemove(bg, "s1"))
	e.wantDevices("vol")
	if got := e.table("vol", false); got != linear(path, volSize/512)+"\n" {
		t.Fatalf("vol table after the last snapshot went: %q", got)
	}
	if f := e.cowFiles(); len(f) != 0 {
		t.Fatalf("COW files left: %v", f)
	}
	e.wantData("vol", b)
	e.write("vol", 0, a[:4096])
}

// Ensure that several snapshots of one origin each keep their own time,
// and can be removed in any order.
func TestSnapshot_severalAnyOrder(t *testing.T) {
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			e := newEnv(t)
			path := e.fileVol("vol", volSize)
			r := rand.New(rand.NewPCG(uint64(order[0]), 7))
			model := randBytes(r, volSize)
			e.write("vol", 0, model)
			images := map[string][]byte{}
			for i := range 3 {
				name := fmt.Sprintf("s%d", i)
				e.snap("vol", name, withChunk(int64(4096<<i)))
				images[name] = bytes.Clone(model)
				for range 20 {
					off := r.Int64N(volSize - 20000)
					p := randBytes(r, 1+r.IntN(20000))
					copy(model[off:], p)
					e.write("vol", off, p)
				}
			}
			for _, i := range order {
				for name, img := range images {
					e.wantData(name, img)
				}
				e.wantData("vol", model)
				name := fmt.Sprintf("s%d", i)
				e.must("remove "+name, e.c.SnapshotRemove(bg, name))
				delete(images, name)
			}
			e.wantDevices("vol")
			if got := e.table("vol", false); got != linear(path, volSize/512)+"\n" {
				t.Fatalf("vol table = %q", got)
			}
			e.wantData("vol", model)
		})
	}
}

// Ensure that every refused snapshot verb says why and what to do, and
// changes nothing.
func TestSnapshot_errors(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", volSize)
	e.snap("vol", "s1")
	e.create("plain", "0 8 zero")
	e.fileVol("idle", volSize)
	dir := t.TempDir()
	mk := func(name string, size int64, head []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, head, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		return p
	}
	small := mk("small", 8192, nil)
	used := mk("used", mib, []byte("SnAp"))
	snapHead := mk("snaphead", mib, []byte{0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0})
	dirty := mk("dirty", mib, []byte("not a cow"))
	e.create("usesfile", linear(used, 8))
	before := e.devNames()
	for _, tc := range []struct {
		name  string
		req   wire.SnapshotCreate
		code  string
		frags []string
	}{
		{"unknown origin", wire.SnapshotCreate{Origin: "nope", Name: "x"}, wire.CodeNotFound, []string{"no origin device nope", "daxsnap ls"}},
		{"name exists", wire.SnapshotCreate{Origin: "vol", Name: "plain"}, wire.CodeExists, []string{"a device called plain exists", "pick another name"}},
		{"name of the real device", wire.SnapshotCreate{Origin: "vol", Name: "vol-real"}, wire.CodeInvalidArgument, []string{"vol-real", "pick another name"}},
		{"empty name", wire.SnapshotCreate{Origin: "vol"}, wire.CodeInvalidArgument, []string{"give a name"}},
		{"snapshot of a snapshot", wire.SnapshotCreate{Origin: "s1", Name: "x"}, wire.CodeInvalidArgument, []string{"s1 is itself a snapshot (of vol)", "snapshot of vol instead"}},
		{"snapshot of the real device", wire.SnapshotCreate{Origin: "vol-real", Name: "x"}, wire.CodeInvalidArgument, []string{"holds the data of vol", "snapshot vol instead"}},
		{"COW size too small", wire.SnapshotCreate{Origin: "idle", Name: "x", COWSize: 8192}, wire.CodeInvalidArgument, []string{"too small", "12288 bytes", "larger --cow-size"}},
		{"COW file too small", wire.SnapshotCreate{Origin: "idle", Name: "x", COW: small}, wire.CodeNoSpace, []string{"8192 bytes, too small", "larger file"}},
		{"COW file missing", wire.SnapshotCreate{Origin: "idle", Name: "x", COW: dir + "/none"}, wire.CodeInvalidArgument, []string{"no such file", "create the file first"}},
		{"COW relative", wire.SnapshotCreate{Origin: "idle", Name: "x", COW: "rel.cow"}, wire.CodeInvalidArgument, []string{"absolute path"}},
		{"COW holds a snapshot", wire.SnapshotCreate{Origin: "idle", Name: "x", COW: snapHead}, wire.CodeExists, []string{"already holds a snapshot", "dd if=/dev/zero of=" + snapHead}},
		{"COW not zeroed", wire.SnapshotCreate{Origin: "idle", Name: "x", COW: dirty}, wire.CodeInvalidArgument, []string{"does not start with zeroes", "dd if=/dev/zero"}},
		{"COW used by a table", wire.SnapshotCreate{Origin: "idle", Name: "x", COW: used}, wire.CodeBusy, []string{"used by the table of usesfile"}},
		{"COW is the origin's file", wire.SnapshotCreate{Origin: "idle", Name: "x", COW: e.tablePath("idle")}, wire.CodeBusy, []string{"used by the table of idle"}},
		{"both COW and size", wire.SnapshotCreate{Origin: "idle", Name: "x", COW: small, COWSize: mib}, wire.CodeInvalidArgument, []string{"not both"}},
		{"chunk not a power of two", wire.SnapshotCreate{Origin: "idle", Name: "x", ChunkSize: 3072}, wire.CodeInvalidArgument, []string{"not a power of two"}},
		{"chunk not in sectors", wire.SnapshotCreate{Origin: "idle", Name: "x", ChunkSize: 1000}, wire.CodeInvalidArgument, []string{"not a multiple of 512"}},
		{"chunk too large", wire.SnapshotCreate{Origin: "idle", Name: "x", ChunkSize: 2 << 30}, wire.CodeInvalidArgument, []string{"larger than the maximum"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.SnapshotCreate(bg, tc.req)
			wantCode(t, err, tc.code, tc.frags...)
		})
	}
	if got := e.devNames(); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Fatalf("devices after refused creations: %v, want %v", got, before)
	}
	if f := e.cowFiles(); len(f) != 1 {
		t.Fatalf("COW files: %v, want only s1's", f)
	}

	// Origin states that cannot take a snapshot.
	e.must("suspend", e.c.Suspend(bg, "idle", wire.Suspend{}))
	_, err := e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "idle", Name: "x"})
	wantCode(t, err, wire.CodeSuspended, "idle is suspended", "daxsnap resume idle")
	e.must("resume", e.c.Resume(bg, "idle"))
	e.must("load", e.c.Load(bg, "idle", wire.Load{Table: "0 8 zero"}))
	_, err = e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "idle", Name: "x"})
	wantCode(t, err, wire.CodeBusy, "inactive table", "resume or clear it")
	e.must("clear", e.c.Clear(bg, "idle"))
	e.create("idle-real", "0 8 zero")
	_, err = e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "idle", Name: "x"})
	wantCode(t, err, wire.CodeExists, "a device called idle-real exists", "rename or remove idle-real")

	// The other verbs.
	wantCode(t, e.c.SnapshotRemove(bg, "nope"), wire.CodeNotFound, "no snapshot called nope", "snapshot list")
	wantCode(t, e.c.SnapshotRemove(bg, "plain"), wire.CodeInvalidArgument, "plain is not a snapshot")
	_, err = e.c.SnapshotMerge(bg, "plain", wire.SnapshotMerge{})
	wantCode(t, err, wire.CodeInvalidArgument, "plain is not a snapshot")
	_, err = e.c.Snapshots(bg, "nope")
	wantCode(t, err, wire.CodeNotFound, "nope")
	e.snap("vol", "t1", transient)
	_, err = e.c.SnapshotMerge(bg, "t1", wire.SnapshotMerge{})
	wantCode(t, err, wire.CodeNotSupported, "transient snapshot", "cannot merge")
	// An open snapshot (an NBD client on it) is neither removed nor merged.
	conn, err := nbdclient.Dial("unix", filepath.Join(e.cfg.StateDir, daemon.NBDSocketName), "s1")
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.c.SnapshotRemove(bg, "s1"), wire.CodeBusy, "s1 is open (1 users", "disconnect them first")
	_, err = e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
	wantCode(t, err, wire.CodeBusy, "s1 is open", "disconnect them first")
	conn.Close()
	// A snapshot set up by hand is listed but left to the device verbs.
	hand := mk("hand.cow", mib, nil)
	e.create("byhand", fmt.Sprintf("0 %d snapshot /dev/mapper/idle %s P 8", volSize/512, hand))
	wantCode(t, e.c.SnapshotRemove(bg, "byhand"), wire.CodeInvalidArgument, "not the /dev/mapper/ORIGIN-real", "daxsnap remove byhand")
	if l := e.snapList(""); len(l) != 3 || l[0].Name != "byhand" || l[0].Origin != "/dev/mapper/idle" || l[0].COWOwned {
		t.Fatalf("list: %+v", l)
	}
}

// tablePath is the file a one-line linear table maps.
func (e *env) tablePath(name string) string {
	e.t.Helper()
	f := strings.Fields(e.table(name, false))
	return f[3]
}

// Ensure that a failure at any step of a creation undoes every step: the
// devices, tables, COW files and the origin are as before, and the origin
// works.
func TestSnapshot_createRollback(t *testing.T) {
	for _, second := range []bool{false, true} {
		for _, step := range []string{"create-real", "load-origin", "create-snapshot", "prepare-snapshot", "activate-snapshot", "resume-origin", "record-snapshot"} {
			if second && (step == "create-real" || step == "load-origin") {
				continue // ORIGIN-real exists already
			}
			t.Run(fmt.Sprintf("%s/second=%v", step, second), func(t *testing.T) {
				e := newEnv(t)
				e.fileVol("vol", volSize)
				data := randBytes(rand.New(rand.NewPCG(3, 4)), volSize)
				e.write("vol", 0, data)
				if second {
					e.snap("vol", "first")
				}
				devs, table, cows := e.devNames(), e.table("vol", false), e.cowFiles()
				reset := e.setFailStep(func(s string) error {
					if s == step {
						return errors.New("injected failure")
					}
					return nil
				})
				_, err := e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "s"})
				reset()
				if err == nil || !strings.Contains(err.Error(), "injected failure") {
					t.Fatalf("create with %s failing: %v", step, err)
				}
				if got := e.devNames(); strings.Join(got, " ") != strings.Join(devs, " ") {
					t.Fatalf("devices %v, want %v", got, devs)
				}
				if got := e.table("vol", false); got != table {
					t.Fatalf("vol table %q, want %q", got, table)
				}
				if in := e.info("vol"); in.Suspended || in.InactiveTable {
					t.Fatalf("vol after rollback: %+v", in)
				}
				if got := e.cowFiles(); strings.Join(got, " ") != strings.Join(cows, " ") {
					t.Fatalf("COW files %v, want %v", got, cows)
				}
				e.wantData("vol", data)
				e.write("vol", 0, data[:512])
				e.snap("vol", "s") // and it works once the fault is gone
				e.wantData("s", data)
			})
		}
	}
}
