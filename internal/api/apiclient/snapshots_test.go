package apiclient

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that the snapshot calls reach the service with their arguments
// and replies, across the socket.
func TestClient_snapshotVerbs(t *testing.T) {
	f := &fakeService{}
	c := serve(t, f, api.Options{})
	s, err := c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "s 1", COW: "/c", ChunkSize: 8192, Transient: true})
	if err != nil || s.Name != "s 1" || s.Origin != "vol" {
		t.Fatalf("create = %+v, %v", s, err)
	}
	list, err := c.Snapshots(bg, "vol")
	if err != nil || len(list) != 1 || list[0].Origin != "vol" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if _, err := c.Snapshots(bg, ""); err != nil {
		t.Fatal(err)
	}
	if s, err := c.Snapshot(bg, "s/2"); err != nil || s.Name != "s/2" || s.State != wire.SnapshotActive {
		t.Fatalf("show = %+v, %v", s, err)
	}
	if s, err := c.SnapshotMerge(bg, "s/2", wire.SnapshotMerge{NoWait: true}); err != nil || s.State != wire.SnapshotMerged {
		t.Fatalf("merge = %+v, %v", s, err)
	}
	if err := c.SnapshotRemove(bg, "s/2"); err != nil {
		t.Fatal(err)
	}
	want := []string{"snapshot create vol s 1 cow=/c size=0 chunk=8192 transient=true",
		"snapshots origin=vol", "snapshots origin=", "snapshot merge s/2 nowait=true", "snapshot remove s/2"}
	if got := f.Calls(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Errors keep their class; a bad body is refused before the service.
	if err := c.SnapshotRemove(bg, "busy"); !errors.Is(err, dm.ErrBusy) {
		t.Fatalf("remove busy: %v", err)
	}
	if _, err := c.Snapshots(bg, "missing"); !errors.Is(err, dm.ErrNotFound) {
		t.Fatalf("list missing: %v", err)
	}
	_, err = c.do(bg, "POST", "/v1/snapshots", nil, map[string]any{"origin": "vol", "bogus": 1}, nil)
	if !errors.Is(err, dm.ErrInvalidArgument) || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown field: %v", err)
	}
	_, err = c.do(bg, "POST", "/v1/snapshots", nil, nil, nil)
	if !errors.Is(err, dm.ErrInvalidArgument) {
		t.Fatalf("empty body: %v", err)
	}
}

// Ensure that the session listing crosses the socket intact.
func TestClient_sessions(t *testing.T) {
	f := &fakeService{}
	c := serve(t, f, api.Options{})
	got, err := c.Sessions(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].PID != 42 || got[0].UID != 7 || len(got[0].Mappings) != 1 ||
		got[0].Mappings[0].Device != "vol" || !got[0].Mappings[0].Write || len(got[0].Problems) != 1 {
		t.Fatalf("sessions = %+v", got)
	}
	if calls := f.Calls(); !slices.Equal(calls, []string{"sessions"}) {
		t.Fatalf("calls %q", calls)
	}
}
