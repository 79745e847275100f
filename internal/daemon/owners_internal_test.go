package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that the map rule is access.Owner.Allows plus the daemon's own
// uid, read vs write, and that a refusal names uid, device, owner, mode
// and what to do.
func TestMayMap(t *testing.T) {
	const self, alice, bob, staff = 990, 1000, 1001, 50
	cases := []struct {
		name        string
		o           access.Owner
		p           access.Peer
		read, write bool
	}{
		{"root, default owner", access.Default(), access.Peer{UID: 0}, true, true},
		{"daemon uid, default owner", access.Default(), access.Peer{UID: self, GID: self}, true, true},
		{"daemon uid, mode 0000 of another", access.Owner{UID: alice, GID: staff}, access.Peer{UID: self}, true, true},
		{"other, default owner", access.Default(), access.Peer{UID: alice, GID: alice}, false, false},
		{"owner 0600", access.Owner{UID: alice, GID: alice, Mode: 0o600}, access.Peer{UID: alice, GID: alice}, true, true},
		{"owner 0400", access.Owner{UID: alice, GID: alice, Mode: 0o400}, access.Peer{UID: alice, GID: alice}, true, false},
		{"group 0640", access.Owner{UID: bob, GID: staff, Mode: 0o640}, access.Peer{UID: alice, GID: staff}, true, false},
		{"supplementary group 0660", access.Owner{UID: bob, GID: staff, Mode: 0o660}, access.Peer{UID: alice, GID: alice, Groups: []uint32{staff}}, true, true},
		{"other 0644", access.Owner{UID: bob, GID: staff, Mode: 0o644}, access.Peer{UID: alice, GID: alice}, true, false},
		{"other 0666", access.Owner{UID: bob, GID: staff, Mode: 0o666}, access.Peer{UID: alice, GID: alice}, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, write := range []bool{false, true} {
				err := mayMap(tc.o, self, tc.p, "vol", access.Need(write))
				if want := tc.read && (!write || tc.write); (err == nil) != want {
					t.Errorf("write=%v: %v, want allowed %v", write, err, want)
				}
				if err != nil && !errors.Is(err, access.ErrPermission) {
					t.Errorf("write=%v: %v is not ErrPermission", write, err)
				}
			}
		})
	}
	err := mayMap(access.Owner{UID: bob, GID: staff, Mode: 0o644}, self, access.Peer{PID: 42, UID: alice, GID: alice}, "vol", access.Need(true))
	for _, want := range []string{"uid 1000", "pid 42", "writable map of vol", "owned by uid 1001, gid 50, mode 0644",
		"the other bits (r--)", "do not allow read and write", "--uid/--gid/--mode", "ask root"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %v lacks %q", err, want)
		}
	}
}

// Ensure that create requests get dmsetup's defaults for what they leave
// out and that records without an owner (older daxsnap) restore with them.
func TestOwnerOf(t *testing.T) {
	uid, gid := uint32(7), uint32(0)
	for _, tc := range []struct {
		req  wire.DeviceCreate
		want access.Owner
	}{
		{wire.DeviceCreate{Name: "a"}, access.Owner{UID: 0, GID: 6, Mode: 0o600}},
		{wire.DeviceCreate{Name: "a", UID: &uid}, access.Owner{UID: 7, GID: 6, Mode: 0o600}},
		{wire.DeviceCreate{Name: "a", GID: &gid, Mode: "0"}, access.Owner{UID: 0, GID: 0, Mode: 0}},
		{wire.DeviceCreate{Name: "a", Mode: "755"}, access.Owner{UID: 0, GID: 6, Mode: 0o755}},
	} {
		if got, err := ownerOf(tc.req); err != nil || got != tc.want {
			t.Errorf("ownerOf(%+v) = %+v, %v; want %+v", tc.req, got, err, tc.want)
		}
	}
	if _, err := ownerOf(wire.DeviceCreate{Name: "a", Mode: "1777"}); err == nil {
		t.Error("mode 1777 accepted")
	}
	if got, problem := restoredOwner(state.Device{Name: "old"}); got != access.Default() || problem != "" {
		t.Errorf("old record restores owner %+v (%q), want the default", got, problem)
	}
	if got, problem := restoredOwner(state.Device{Owner: &state.Owner{UID: 5, GID: 0, Mode: 0o640}}); got != (access.Owner{UID: 5, Mode: 0o640}) || problem != "" {
		t.Errorf("restored owner %+v (%q)", got, problem)
	}
}
