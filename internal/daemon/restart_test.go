package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that devices, tables, suspension and data survive a restart, and
// that a device stacked on another comes back after it even when its name
// sorts first.
func TestDaemon_restart(t *testing.T) {
	e := newEnv(t)
	path := e.region("r", 4*mib)
	e.create("z-base", linear(path, 8192))
	e.create("a-top", "0 8192 linear /dev/mapper/z-base 0")
	e.create("mid", "0 8 zero")
	e.must("load", e.c.Load(bg, "mid", wire.Load{Table: "0 16 zero"}))
	e.must("suspend", e.c.Suspend(bg, "mid", wire.Suspend{}))
	data := bytes.Repeat([]byte{0xa5, 0x5a}, 2048)
	e.must("write", e.c.WriteData(bg, "a-top", 8192, data))

	e.restart()
	if got := e.table("a-top", false); got != "0 8192 linear /dev/mapper/z-base 0\n" {
		t.Fatalf("a-top table after restart = %q", got)
	}
	if in := e.info("a-top"); in.Note != "" || !in.LiveTable {
		t.Fatalf("a-top after restart: %+v", in)
	}
	if in := e.info("z-base"); in.OpenCount != 1 {
		t.Fatalf("z-base open count %d after restart, want 1 (held by a-top)", in.OpenCount)
	}
	for _, dev := range []string{"a-top", "z-base"} {
		got, err := e.c.ReadData(bg, dev, 8192, int64(len(data)))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: data lost across restart: %v", dev, err)
		}
	}
	in := e.info("mid")
	if !in.Suspended || !in.InactiveTable || in.Sectors != 8 {
		t.Fatalf("mid after restart: %+v, want suspended with an inactive table", in)
	}
	if got := e.table("mid", true); got != "0 16 zero \n" {
		t.Fatalf("mid inactive table = %q", got)
	}
	e.must("resume", e.c.Resume(bg, "mid"))
	if in := e.info("mid"); in.Sectors != 16 {
		t.Fatalf("mid after resume: %+v", in)
	}
}

// Ensure that devices come back after the devices their tables stack on
// whatever their names, through inactive tables and chains too, and that a
// table over a device recorded without a table comes back degraded, saying
// so, without keeping the others from coming back.
func TestDaemon_restartStackOrder(t *testing.T) {
	e := newEnv(t)
	path := e.region("r", 4*mib)
	e.create("z-base", linear(path, 8192))
	e.create("m-mid", "0 8192 linear /dev/mapper/z-base 0")
	e.create("a-top", "0 8 zero")
	e.must("load", e.c.Load(bg, "a-top", wire.Load{Table: "0 8192 linear /dev/mapper/m-mid 0"}))
	e.create("empty", "0 8 zero")
	e.create("b-over-empty", "0 8 linear /dev/mapper/empty 0")
	e.must("load", e.c.Load(bg, "empty", wire.Load{Table: "0 8 zero"}))
	e.stop()
	// empty's record loses its live table, as a state file of a device
	// created with --notable says.
	s, err := state.Open(e.cfg.StateDir, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec, _, _ := s.Device("empty")
	rec.Live, rec.Inactive = "", ""
	if err := s.PutDevice(rec); err != nil {
		t.Fatal(err)
	}
	s.Close()
	e.start()

	if got := e.table("a-top", true); got != "0 8192 linear /dev/mapper/m-mid 0\n" {
		t.Fatalf("a-top inactive table after restart = %q (note %q)", got, e.info("a-top").Note)
	}
	if got := e.table("m-mid", false); got != "0 8192 linear /dev/mapper/z-base 0\n" {
		t.Fatalf("m-mid table after restart = %q (note %q)", got, e.info("m-mid").Note)
	}
	e.must("resume a-top", e.c.Resume(bg, "a-top"))
	data := bytes.Repeat([]byte("order"), 100)
	e.must("write", e.c.WriteData(bg, "a-top", 4096, data))
	if got, err := e.c.ReadData(bg, "z-base", 4096, int64(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a write through a-top did not reach z-base: %v", err)
	}
	in := e.info("b-over-empty")
	if got := e.table("b-over-empty", false); got != "0 8 error \n" || !strings.Contains(in.Note, "/dev/mapper/empty has no live table") {
		t.Fatalf("b-over-empty over a device without a table: table %q, note %q", got, in.Note)
	}
}

// Ensure that a device whose backing file vanished comes back serving
// `error` with a note, without keeping the others (or a device stacked on
// it) from coming back, and that its table returns with its file.
func TestDaemon_restartMissingBacking(t *testing.T) {
	e := newEnv(t)
	path := e.region("r", 4*mib)
	e.create("gone", linear(path, 8192))
	e.create("above", "0 8192 linear /dev/mapper/gone 0")
	e.create("fine", "0 8 zero")
	e.stop()
	// Moved away, not deleted: a region file that comes back must be the
	// same file (inode) that pmem create made.
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	e.start()

	in := e.info("gone")
	if !in.LiveTable || in.Sectors != 8192 || !strings.Contains(in.Note, "did not load") || !strings.Contains(in.Note, path) {
		t.Fatalf("gone after restart: %+v", in)
	}
	if got := e.table("gone", false); got != "0 8192 error \n" {
		t.Fatalf("gone table = %q, want an error table of the recorded size", got)
	}
	st, err := e.c.Status(bg, "gone", false)
	if err != nil || !strings.Contains(st.Note, "restart `daxsnap serve`") {
		t.Fatalf("gone status = %+v, %v", st, err)
	}
	_, err = e.c.ReadData(bg, "gone", 0, 512)
	wantCode(t, err, wire.CodeIO)
	if in := e.info("above"); !in.LiveTable || in.Note != "" {
		t.Fatalf("above after restart: %+v", in)
	}
	if in := e.info("fine"); !in.LiveTable {
		t.Fatalf("fine after restart: %+v", in)
	}
	p, _ := e.c.PmemGet(bg, "r")
	if !strings.Contains(p.Note, "missing") || len(p.UsedBy) != 1 {
		t.Fatalf("pmem r: %+v, want a note and gone as its user", p)
	}

	// The recorded table was kept: with the file back, it loads again.
	e.stop()
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	e.start()
	if got := e.table("gone", false); got != linear(path, 8192)+"\n" {
		t.Fatalf("gone table with its file back = %q", got)
	}
	if in := e.info("gone"); in.Note != "" {
		t.Fatalf("gone still has a note: %q", in.Note)
	}
}

// Ensure that a second daemon on the same state directory is refused,
// naming the holder.
func TestDaemon_secondRefused(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.NoNBDUnix = true
	_, err := daemon.Start(cfg)
	if !errors.Is(err, state.ErrLocked) {
		t.Fatalf("second start: %v, want ErrLocked", err)
	}
	want := "another daxsnap serve holds " + e.cfg.StateDir + "/daxsnap.db (pid " + strconv.Itoa(os.Getpid()) + ")"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q lacks %q", err, want)
	}
	if _, err := e.c.Version(bg); err != nil {
		t.Fatalf("first daemon hurt by the second: %v", err)
	}
}

// Ensure that operations cut short by a stop are settled at start: an
// unfinished create is dropped, any other leaves a note.
func TestDaemon_interrupted(t *testing.T) {
	e := newEnv(t)
	e.create("loading", "0 8 zero")
	e.stop()
	s, err := state.Open(e.cfg.StateDir, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec, _, _ := s.Device("loading")
	rec.Op = state.Op{Verb: "load"}
	s.PutDevice(rec)
	s.PutDevice(state.Device{Name: "half", Op: state.Op{Verb: "create"}})
	s.Close()
	e.start()
	if in := e.info("loading"); !strings.Contains(in.Note, "stopped during `load`") || !in.LiveTable {
		t.Fatalf("loading after restart: %+v", in)
	}
	_, err = e.c.Info(bg, "half")
	wantCode(t, err, wire.CodeNotFound)
	// The next successful operation clears the note.
	e.must("suspend", e.c.Suspend(bg, "loading", wire.Suspend{}))
	if in := e.info("loading"); in.Note != "" {
		t.Fatalf("note survived a successful operation: %q", in.Note)
	}
}

// Ensure that what the daemon notes on a device stays with that device:
// an interrupted operation on a record that could not come back as a
// device (its uuid is another's) is noted on nothing, and a device
// created later under its name starts with no note.
func TestDaemon_interruptedNoteStaysWithItsDevice(t *testing.T) {
	e := newEnv(t)
	e.stop()
	s, err := state.Open(e.cfg.StateDir, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.PutDevice(state.Device{Name: "a", UUID: "same", Live: "0 8 zero\n"})
	s.PutDevice(state.Device{Name: "b", UUID: "same", Live: "0 8 zero\n", Op: state.Op{Verb: "load"}})
	s.Close()
	e.start()
	if _, err := e.c.Info(bg, "b"); !errors.Is(err, dm.ErrNotFound) {
		t.Fatalf("b, whose uuid is a's, came back: %v", err)
	}
	e.create("b", "0 8 zero")
	if in := e.info("b"); in.Note != "" {
		t.Errorf("a new device b has the note of the record that did not come back: %q", in.Note)
	}
}

// Ensure that a deferred removal happens at the last close and is
// recorded, and that --force makes an open device's I/O fail.
func TestDaemon_removeOpen(t *testing.T) {
	e := newEnv(t)
	e.create("low", "0 8 zero")
	e.create("high", "0 8 linear /dev/mapper/low 0")
	// Without --force: no hint of it, which would break high too.
	err := e.c.Remove(bg, "low", wire.Remove{})
	wantCode(t, err, wire.CodeBusy, "the tables of high map /dev/mapper/low", "--deferred")
	if strings.Contains(err.Error(), "--force") {
		t.Errorf("remove of a device a table maps hints --force: %v", err)
	}
	// With it: the table is wiped and saved; the error says so, and who holds it.
	err = e.c.Remove(bg, "low", wire.Remove{Force: true})
	wantCode(t, err, wire.CodeBusy, "its table is now `error`", "every I/O to it fails", "the state file says so",
		"held by the tables of high (they map /dev/mapper/low)", "remove --deferred low")
	if got := e.table("low", false); got != "0 8 error \n" {
		t.Fatalf("low table after remove --force = %q", got)
	}
	e.must("remove --deferred", e.c.Remove(bg, "low", wire.Remove{Deferred: true}))
	if in := e.info("low"); !in.DeferredRemove {
		t.Fatalf("low after remove --deferred: %+v", in)
	}
	e.must("remove high", e.c.Remove(bg, "high", wire.Remove{}))
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := e.c.Info(bg, "low")
		if errors.Is(err, dm.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("low still there after its last close: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.stop()
	s, err := state.Open(e.cfg.StateDir, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, kept, _ := s.Device("low")
	s.Close()
	if kept {
		t.Fatal("low's record survived its deferred removal")
	}
	e.start()
	if devs, _ := e.c.Devices(bg); len(devs) != 0 {
		t.Fatalf("devices after restart: %+v", devs)
	}
}

// Ensure that removing ORIGIN-real points at the snapshot verbs, never at
// --force (which would break the origin and its snapshots), and that a
// forced removal of a device an NBD client holds names the client.
func TestDaemon_removeHints(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", volSize)
	e.snap("vol", "s1")
	err := e.c.Remove(bg, "vol-real", wire.Remove{})
	wantCode(t, err, wire.CodeBusy, "the tables of", "it holds the data of origin vol under its snapshots s1", "daxsnap snapshot remove")
	if strings.Contains(err.Error(), "--force") {
		t.Errorf("remove vol-real hints --force: %v", err)
	}

	e.create("x", "0 8 zero")
	nc, err := nbdclient.Dial("unix", filepath.Join(e.cfg.StateDir, daemon.NBDSocketName), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	err = e.c.Remove(bg, "x", wire.Remove{Force: true})
	wantCode(t, err, wire.CodeBusy, "its table is now `error`",
		fmt.Sprintf("held by an NBD client, uid %d (gid %d, pid %d)", os.Getuid(), os.Getgid(), os.Getpid()))
	nc.Close()
	e.waitOpenCount("x", 0)
	e.must("remove x", e.c.Remove(bg, "x", wire.Remove{}))
}
