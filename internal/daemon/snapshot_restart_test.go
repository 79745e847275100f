package daemon_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that snapshots, their relations and exceptions survive a
// restart: persistent snapshots read the same and keep copying out, and a
// transient one comes back as `error` with a note saying why (its
// exceptions were in the stopped daemon's memory), until removed.
func TestSnapshot_restart(t *testing.T) {
	e := newEnv(t)
	path := e.fileVol("vol", volSize)
	r := rand.New(rand.NewPCG(5, 6))
	model := randBytes(r, volSize)
	e.write("vol", 0, model)
	e.snap("vol", "s1")
	img1 := bytes.Clone(model)
	for range 10 {
		off, p := r.Int64N(volSize-8192), randBytes(r, 8192)
		copy(model[off:], p)
		e.write("vol", off, p)
	}
	e.snap("vol", "s2", withChunk(16384))
	img2 := bytes.Clone(model)
	e.snap("vol", "t1", transient)
	copy(model[4096:], []byte("after t1"))
	e.write("vol", 4096, []byte("after t1"))
	before := e.snapList("")
	tables := map[string]string{}
	for _, n := range e.devNames() {
		tables[n] = e.table(n, false)
	}

	e.restart()
	for n, want := range tables {
		if n == "t1" {
			continue
		}
		if got := e.table(n, false); got != want {
			t.Fatalf("%s table after restart = %q, want %q", n, got, want)
		}
	}
	e.wantData("s1", img1)
	e.wantData("s2", img2)
	e.wantData("vol", model)
	after := e.snapList("")
	for i, s := range after {
		b := before[i]
		if s.Name != b.Name || s.Origin != "vol" || s.COW != b.COW {
			t.Fatalf("snapshot %d after restart: %+v, before %+v", i, s, b)
		}
		if s.Name != "t1" && (s.State != wire.SnapshotActive || s.Exceptions != b.Exceptions) {
			t.Fatalf("%s after restart: %+v, before %+v", s.Name, s, b)
		}
	}
	t1 := after[2]
	if t1.State != wire.SnapshotError || !hasAll(t1.Note, "transient", "contents are gone", "daxsnap snapshot remove t1") {
		t.Fatalf("t1 after restart: %+v", t1)
	}
	if got := e.table("t1", false); got != fmt.Sprintf("0 %d error \n", volSize/512) {
		t.Fatalf("t1 table = %q", got)
	}
	_, err := e.c.ReadData(bg, "t1", 0, 512)
	wantCode(t, err, wire.CodeIO)

	// Exceptions keep working: new origin writes copy out.
	p := randBytes(r, 3*4096)
	e.write("vol", 40960, p)
	copy(model[40960:], p)
	e.wantData("s1", img1)
	e.wantData("s2", img2)
	e.wantData("vol", model)
	// A second restart keeps t1 as it is.
	e.restart()
	if s, err := e.c.Snapshot(bg, "t1"); err != nil || s.State != wire.SnapshotError {
		t.Fatalf("t1 after a second restart: %+v, %v", s, err)
	}
	for _, n := range []string{"t1", "s2", "s1"} {
		e.must("remove "+n, e.c.SnapshotRemove(bg, n))
	}
	e.wantDevices("vol")
	if got := e.table("vol", false); got != linear(path, volSize/512)+"\n" {
		t.Fatalf("vol table = %q", got)
	}
	if f := e.cowFiles(); len(f) != 0 {
		t.Fatalf("COW files left: %v", f)
	}
	e.wantData("vol", model)
}

// editRecord changes a device record while the daemon is stopped, as a
// stop in the middle of an operation would have left it.
func (e *env) editRecord(name string, fn func(*state.Device)) {
	e.t.Helper()
	s, err := state.Open(e.cfg.StateDir, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer s.Close()
	rec, ok, err := s.Device(name)
	if err != nil || !ok {
		e.t.Fatalf("record %s: %v, %v", name, ok, err)
	}
	fn(&rec)
	if err := s.PutDevice(rec); err != nil {
		e.t.Fatal(err)
	}
}

// Ensure that a snapshot verb the daemon stopped in the middle of is
// settled at the next start: a creation is undone (its caller never heard
// of success), a removal completed, a merge carried through.
func TestSnapshot_interrupted(t *testing.T) {
	t.Run("first creation", func(t *testing.T) {
		e := newEnv(t)
		path := e.fileVol("vol", volSize)
		data := randBytes(rand.New(rand.NewPCG(1, 1)), volSize)
		e.write("vol", 0, data)
		e.snap("vol", "s9")
		e.stop()
		// Everything but the origin's outcome was recorded.
		e.editRecord("vol", func(r *state.Device) {
			r.Live, r.Op = linear(path, volSize/512)+"\n", state.Op{Verb: "snapshot-create", Arg: "s9"}
		})
		e.start()
		e.wantDevices("vol")
		if got := e.table("vol", false); got != linear(path, volSize/512)+"\n" {
			t.Fatalf("vol table = %q", got)
		}
		if f := e.cowFiles(); len(f) != 0 {
			t.Fatalf("COW files left: %v", f)
		}
		if in := e.info("vol"); in.Note != "" || in.Suspended {
			t.Fatalf("vol: %+v", in)
		}
		e.wantData("vol", data)
		e.restart() // and the record says so
		e.wantDevices("vol")
	})
	t.Run("second creation", func(t *testing.T) {
		e := newEnv(t)
		e.fileVol("vol", volSize)
		e.snap("vol", "s1")
		e.snap("vol", "s2")
		e.stop()
		e.editRecord("vol", func(r *state.Device) { r.Op = state.Op{Verb: "snapshot-create", Arg: "s2"} })
		e.start()
		e.wantOnlyS1()
	})
	t.Run("removal", func(t *testing.T) {
		e := newEnv(t)
		path := e.fileVol("vol", volSize)
		e.snap("vol", "s1")
		e.stop()
		e.editRecord("vol", func(r *state.Device) { r.Op = state.Op{Verb: "snapshot-remove", Arg: "s1"} })
		e.start()
		e.wantDevices("vol")
		if got := e.table("vol", false); got != linear(path, volSize/512)+"\n" {
			t.Fatalf("vol table = %q", got)
		}
		if f := e.cowFiles(); len(f) != 0 {
			t.Fatalf("COW files left: %v", f)
		}
	})
	t.Run("merge start", func(t *testing.T) {
		e := newEnv(t)
		e.fileVol("vol", volSize)
		r := rand.New(rand.NewPCG(2, 2))
		img := randBytes(r, volSize)
		e.write("vol", 0, img)
		e.snap("vol", "s1")
		e.write("vol", 0, randBytes(r, volSize/2))
		e.stop()
		e.editRecord("vol", func(r *state.Device) { r.Op = state.Op{Verb: "snapshot-merge", Arg: "s1"} })
		e.start()
		e.waitGone("s1", "vol")
		e.wantDevices("vol")
		e.wantData("vol", img)
	})
}

// waitGone waits until a snapshot's merge has finished: the snapshot is
// gone and its origin settled (resumed, no merge table, ORIGIN-real only
// under remaining snapshots). The daemon's own job finishes it, so
// nothing returns when it is done.
func (e *env) waitGone(name, origin string) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !e.settled(name, origin) {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s still merging into %s: %+v", name, origin, e.snapList(""))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) settled(name, origin string) bool {
	if _, err := e.c.Snapshot(bg, name); err == nil {
		return false
	}
	in, err := e.c.Info(bg, origin)
	if err != nil || in.Suspended {
		return false
	}
	table := e.table(origin, false)
	_, realErr := e.c.Info(bg, origin+"-real")
	_, mergeErr := e.c.Info(bg, origin+"-merge")
	snapOrigin := strings.Contains(table, " snapshot-origin ")
	return mergeErr != nil && !strings.Contains(table, "snapshot-merge") && (snapOrigin == (realErr == nil))
}
