package session_test

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/session"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that a session cannot pile up grants it never arms: past
// MaxPending, map requests are refused with a message saying what to
// do, and giving grants back makes room again.
func TestMap_PendingCap(t *testing.T) {
	const max = 8
	r := newRig(t, "mem")
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	srv, err := session.Listen(session.Config{Socket: filepath.Join(t.TempDir(), "cap.sock"), Lookup: r.m.Get, OnRemove: r.m.OnRemove, MaxPending: max})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: srv.Socket(), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, wire.MaxSessionPacket)
	ask := func(m wire.SessionMsg) wire.SessionMsg {
		t.Helper()
		if err := wire.SendSession(conn, m); err != nil {
			t.Fatal(err)
		}
		ans, fds, err := wire.RecvSession(conn, buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return ans
	}
	mapReq := &wire.MapReq{Device: "vol", Length: volSize}
	for id := uint64(1); id <= max; id++ {
		if ans := ask(wire.SessionMsg{Op: wire.OpMap, ID: id, Map: mapReq}); ans.Op != wire.OpGrant {
			t.Fatalf("map %d: %+v, want a grant", id, ans)
		}
	}
	ans := ask(wire.SessionMsg{Op: wire.OpMap, ID: max + 1, Map: mapReq})
	if ans.Op != wire.OpError || ans.Error == nil || ans.Error.Code != wire.CodeNoSpace ||
		!strings.Contains(ans.Error.Error, "8 map grants it has not armed") || !strings.Contains(ans.Error.Error, "OpUnmap") {
		t.Fatalf("map past the cap: %+v (error %+v), want no_space saying why and what to do", ans, ans.Error)
	}
	if ans := ask(wire.SessionMsg{Op: wire.OpUnmap, ID: 1}); ans.Op != wire.OpUnmapped {
		t.Fatalf("unmap: %+v", ans)
	}
	if ans := ask(wire.SessionMsg{Op: wire.OpMap, ID: max + 1, Map: mapReq}); ans.Op != wire.OpGrant {
		t.Fatalf("map after giving one back: %+v, want a grant", ans)
	}
}
