package daemon_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

const mib = 1 << 20

// Ensure that every verb works end to end through the socket.
func TestDaemon_verbs(t *testing.T) {
	e := newEnv(t)
	v, err := e.c.Version(bg)
	if err != nil || v.Version != "test" || v.API != "v1" {
		t.Fatalf("version = %+v, %v", v, err)
	}
	targets, err := e.c.Targets(bg)
	if err != nil || !slices.ContainsFunc(targets, func(tt wire.Target) bool { return tt.Name == "linear" }) {
		t.Fatalf("targets = %+v, %v", targets, err)
	}
	path := e.region("r", 4*mib)
	regions, err := e.c.PmemList(bg)
	if err != nil || len(regions) != 1 || regions[0].Path != path || regions[0].Filesystem != "tmpfs" {
		t.Fatalf("pmem list = %+v, %v", regions, err)
	}

	in := e.create("vol", linear(path, 4096))
	if !in.LiveTable || in.Sectors != 4096 || in.Suspended || !strings.Contains(in.Capabilities, "dax") {
		t.Fatalf("create: %+v", in)
	}
	if got := e.table("vol", false); got != "0 4096 linear "+path+" 0\n" {
		t.Fatalf("table = %q", got)
	}
	st, err := e.c.Status(bg, "vol", false)
	if err != nil || st.Text != "0 4096 linear \n" {
		t.Fatalf("status = %+v, %v", st, err)
	}
	if p, _ := e.c.PmemGet(bg, "r"); !slices.Equal(p.UsedBy, []string{"vol"}) {
		t.Fatalf("pmem r used by %v, want [vol]", p.UsedBy)
	}

	data := bytes.Repeat([]byte("daxsnap!"), 512)
	e.must("write", e.c.WriteData(bg, "vol", 4096, data))
	got, err := e.c.ReadData(bg, "vol", 4096, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}

	// load + resume grows the device onto the second half of the region.
	e.must("load", e.c.Load(bg, "vol", wire.Load{Table: "0 4096 linear " + path + " 0\n4096 4096 linear " + path + " 4096"}))
	if in := e.info("vol"); !in.InactiveTable || !in.LiveTable {
		t.Fatalf("after load: %+v", in)
	}
	if got := e.table("vol", true); !strings.Contains(got, "4096 4096 linear") {
		t.Fatalf("inactive table = %q", got)
	}
	if st, _ := e.c.Status(bg, "vol", true); strings.Count(st.Text, "\n") != 2 {
		t.Fatalf("inactive status = %q", st.Text)
	}
	e.must("suspend", e.c.Suspend(bg, "vol", wire.Suspend{}))
	if in := e.info("vol"); !in.Suspended {
		t.Fatalf("after suspend: %+v", in)
	}
	e.must("resume", e.c.Resume(bg, "vol"))
	if in := e.info("vol"); in.Suspended || in.InactiveTable || in.Sectors != 8192 || in.EventNr != 0 { // the kernel's event number: a resume raises none
		t.Fatalf("after resume: %+v", in)
	}

	e.must("load again", e.c.Load(bg, "vol", wire.Load{Table: linear(path, 8192)}))
	e.must("clear", e.c.Clear(bg, "vol"))
	if in := e.info("vol"); in.InactiveTable {
		t.Fatalf("after clear: %+v", in)
	}

	if _, err := e.c.Rename(bg, "vol", wire.Rename{NewName: "vol2"}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.c.ReadData(bg, "vol2", 4096, int64(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after rename: %v", err)
	}
	e.must("wipe_table", e.c.WipeTable(bg, "vol2"))
	if got := e.table("vol2", false); got != "0 8192 error \n" {
		t.Fatalf("table after wipe = %q", got)
	}
	devs, err := e.c.Devices(bg)
	if err != nil || len(devs) != 1 || devs[0].Name != "vol2" {
		t.Fatalf("devices = %+v, %v", devs, err)
	}
	e.must("remove", e.c.Remove(bg, "vol2", wire.Remove{}))
	e.must("pmem remove", e.c.PmemRemove(bg, "r"))
	if regions, _ := e.c.PmemList(bg); len(regions) != 0 {
		t.Fatalf("regions after remove: %+v", regions)
	}
}

// Ensure that create --notable, uuid and read-only are kept.
func TestDaemon_createOptions(t *testing.T) {
	e := newEnv(t)
	in, err := e.c.Create(bg, wire.DeviceCreate{Name: "empty", UUID: "u-1", NoTable: true})
	if err != nil || in.LiveTable || in.UUID != "u-1" {
		t.Fatalf("create --notable: %+v, %v", in, err)
	}
	if got := e.table("empty", false); got != "" {
		t.Fatalf("table of an empty device = %q", got)
	}
	in, err = e.c.Create(bg, wire.DeviceCreate{Name: "ro", Table: "0 8 zero", ReadOnly: true})
	if err != nil || !in.ReadOnly {
		t.Fatalf("create --readonly: %+v, %v", in, err)
	}
	e.restart()
	if in := e.info("empty"); in.UUID != "u-1" || in.LiveTable {
		t.Fatalf("after restart: %+v", in)
	}
	if in := e.info("ro"); !in.ReadOnly {
		t.Fatalf("after restart: %+v", in)
	}
}

// Ensure that a message reaches the target (linear takes none) and that
// the sector is checked.
func TestDaemon_message(t *testing.T) {
	e := newEnv(t)
	e.create("z", "0 8 zero")
	_, err := e.c.Message(bg, "z", wire.Message{Sector: 0, Args: []string{"hello"}})
	wantCode(t, err, wire.CodeInvalidArgument, "zero", "takes no messages")
	_, err = e.c.Message(bg, "z", wire.Message{Sector: 8, Args: []string{"hello"}})
	wantCode(t, err, wire.CodeInvalidArgument, "sector 8")
}
