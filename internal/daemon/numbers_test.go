package daemon_test

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that a device keeps its major:minor across a restart, as the
// kernel's keep theirs while they live: b, made after a that is gone
// since, stays 254:1 though 0 is free; a device made after the restart
// gets the lowest free minor, 0.
func TestDaemon_restartKeepsNumbers(t *testing.T) {
	e := newEnv(t)
	e.create("a", "0 8 zero")
	e.create("b", "0 8 zero")
	e.must("remove a", e.c.Remove(bg, "a", wire.Remove{}))
	if in := e.info("b"); in.Major != dm.Major || in.Minor != 1 {
		t.Fatalf("b is %d:%d, want %d:1", in.Major, in.Minor, dm.Major)
	}
	e.restart()
	if in := e.info("b"); in.Major != dm.Major || in.Minor != 1 {
		t.Fatalf("b is %d:%d after a restart, want %d:1 as before", in.Major, in.Minor, dm.Major)
	}
	e.create("c", "0 8 zero")
	if in := e.info("c"); in.Minor != 0 {
		t.Fatalf("c, made after the restart, is minor %d, want the free 0", in.Minor)
	}
}

// Ensure that set changes a device's owner in place, and that a restart
// keeps the new owner.
func TestDaemon_setOwner(t *testing.T) {
	e := newEnv(t)
	e.create("vol", "0 8 zero")
	uid := uint32(65534)
	in, err := e.c.SetOwner(bg, "vol", wire.SetOwner{UID: &uid, Mode: "0640"})
	if err != nil || in.UID != 65534 || in.GID != 6 || in.Mode != "0640" {
		t.Fatalf("set: %+v, %v", in, err)
	}
	e.restart()
	if in := e.info("vol"); in.UID != 65534 || in.GID != 6 || in.Mode != "0640" {
		t.Fatalf("after a restart: uid %d gid %d mode %s, want 65534 6 0640", in.UID, in.GID, in.Mode)
	}
	if _, err := e.c.SetOwner(bg, "vol", wire.SetOwner{Mode: "01777"}); err == nil {
		t.Fatal("set --mode 01777: no error")
	}
}
