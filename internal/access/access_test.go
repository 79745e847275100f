package access

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// Ensure that the rule picks one class, as for files: owner, then group
// (primary or supplementary), then other; root may do anything.
func TestAllows(t *testing.T) {
	const alice, bob, staff, users = 1000, 1001, 50, 100
	cases := []struct {
		name  string
		o     Owner
		p     Peer
		read  bool // read map allowed
		write bool // write map allowed
	}{
		{"root on 0600 root", Default(), Peer{UID: 0, GID: 0}, true, true},
		{"root on 0000", Owner{UID: alice, GID: staff, Mode: 0}, Peer{UID: 0}, true, true},
		{"other on 0600 root", Default(), Peer{UID: alice, GID: users}, false, false},
		{"other in group disk, 0600", Default(), Peer{UID: alice, GID: DefaultGID}, false, false},
		{"group disk on 0660", Owner{UID: 0, GID: DefaultGID, Mode: 0o660}, Peer{UID: alice, GID: DefaultGID}, true, true},
		{"owner 0600", Owner{UID: alice, GID: users, Mode: 0o600}, Peer{UID: alice, GID: users}, true, true},
		{"owner 0400", Owner{UID: alice, GID: users, Mode: 0o400}, Peer{UID: alice, GID: users}, true, false},
		{"owner 0200 (write without read)", Owner{UID: alice, GID: users, Mode: 0o200}, Peer{UID: alice, GID: users}, false, false},
		{"owner denied though other allows", Owner{UID: alice, GID: users, Mode: 0o066}, Peer{UID: alice, GID: users}, false, false},
		{"group denied though other allows", Owner{UID: bob, GID: staff, Mode: 0o606}, Peer{UID: alice, GID: staff}, false, false},
		{"primary group 0640", Owner{UID: bob, GID: staff, Mode: 0o640}, Peer{UID: alice, GID: staff}, true, false},
		{"primary group 0660", Owner{UID: bob, GID: staff, Mode: 0o660}, Peer{UID: alice, GID: staff}, true, true},
		{"supplementary group 0660", Owner{UID: bob, GID: staff, Mode: 0o660}, Peer{UID: alice, GID: users, Groups: []uint32{24, staff}}, true, true},
		{"supplementary group 0640", Owner{UID: bob, GID: staff, Mode: 0o640}, Peer{UID: alice, GID: users, Groups: []uint32{staff}}, true, false},
		{"not in group 0660", Owner{UID: bob, GID: staff, Mode: 0o660}, Peer{UID: alice, GID: users, Groups: []uint32{24}}, false, false},
		{"other 0644", Owner{UID: bob, GID: staff, Mode: 0o644}, Peer{UID: alice, GID: users}, true, false},
		{"other 0666", Owner{UID: bob, GID: staff, Mode: 0o666}, Peer{UID: alice, GID: users}, true, true},
		{"other 0604", Owner{UID: bob, GID: staff, Mode: 0o604}, Peer{UID: alice, GID: users}, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.o.Allows(tc.p, Need(false)); got != tc.read {
				t.Errorf("%v allows %+v read = %v, want %v", tc.o, tc.p, got, tc.read)
			}
			if got := tc.o.Allows(tc.p, Need(true)); got != tc.write {
				t.Errorf("%v allows %+v read and write = %v, want %v", tc.o, tc.p, got, tc.write)
			}
		})
	}
}

// Ensure that modes are octal permission bits, as dmsetup --mode takes.
func TestParseMode(t *testing.T) {
	for s, want := range map[string]uint32{"0600": 0o600, "600": 0o600, "0": 0, "0777": 0o777, "00644": 0o644} {
		if got, err := ParseMode(s); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %#o, %v; want %#o", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0x1ff", "0800", "rw", "01777", "4755", "-1", "0600 "} {
		if got, err := ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) = %#o, want an error", s, got)
		}
	}
	if FormatMode(0o600) != "0600" || FormatMode(0) != "0000" {
		t.Errorf("FormatMode: %s %s", FormatMode(0o600), FormatMode(0))
	}
	if err := (Owner{Mode: 0o1777}).Check(); err == nil {
		t.Error("Check passed mode 01777")
	}
	if err := (Owner{UID: NoID}).Check(); err == nil {
		t.Error("Check passed uid -1")
	}
	if err := Default().Check(); err != nil {
		t.Error(err)
	}
}

// Ensure that supplementary groups come from the Groups line, and only if
// the status is the peer's (same effective uid).
func TestParseStatus(t *testing.T) {
	const status = "Name:\tcat\nUmask:\t0022\nUid:\t1000\t1001\t1001\t1001\nGid:\t100\t100\t100\t100\nGroups:\t24 27 100 \nNgid:\t0\n"
	got, err := parseStatus(bufio.NewScanner(strings.NewReader(status)), 1001)
	if err != nil || len(got) != 3 || got[0] != 24 || got[2] != 100 {
		t.Fatalf("groups = %v, %v; want [24 27 100]", got, err)
	}
	if _, err := parseStatus(bufio.NewScanner(strings.NewReader(status)), 1000); err == nil {
		t.Error("a status with another effective uid gave groups")
	}
	got, err = parseStatus(bufio.NewScanner(strings.NewReader("Uid:\t5\t5\t5\t5\nGroups:\t\n")), 5)
	if err != nil || len(got) != 0 {
		t.Errorf("no supplementary groups: %v, %v", got, err)
	}
	for _, bad := range []string{"Uid:\t5\t5\t5\t5\n", "Groups:\t1\n", "Uid:\t5\t5\t5\t5\nGroups:\tx\n", "Uid:\t5\nGroups:\t1\n"} {
		if g, err := parseStatus(bufio.NewScanner(strings.NewReader(bad)), 5); err == nil {
			t.Errorf("status %q gave groups %v", bad, g)
		}
	}
	// This process's own status.
	if _, err := Groups(os.Getpid(), uint32(os.Geteuid())); err != nil {
		t.Errorf("Groups(self): %v", err)
	}
	if _, err := Groups(0, 0); err == nil {
		t.Error("Groups(pid 0) succeeded")
	}
}
