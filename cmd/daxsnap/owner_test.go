package main

import (
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that create takes dmsetup's --uid/--gid/--mode (and -U/-G/-M),
// that info shows them (plain and --json), that rename keeps them, and
// that a bad mode or uid is refused saying why.
func TestCLI_owner(t *testing.T) {
	c := newCLI(t)
	c.ok("create", "a", "--table", "0 8 zero", "--uid", "65534", "--gid", "100", "--mode", "640")
	c.ok("create", "b", "--notable", "-U", "1000", "-M", "0666")
	c.ok("create", "c", "--notable", "-G", "0")
	c.ok("create", "d", "--notable")
	for name, want := range map[string]string{
		"a": "uid 65534, gid 100, mode 0640",
		"b": "uid 1000, gid 6, mode 0666",
		"c": "uid 0, gid 0, mode 0600",
		"d": "uid 0, gid 6, mode 0600",
	} {
		if info := c.ok("info", name); !strings.Contains(info, "\nOwner:             "+want+"\n") {
			t.Errorf("info %s:\n%s\nwant Owner %q", name, info, want)
		}
	}
	c.ok("rename", "a", "a2")
	var infos []wire.Info
	decode(t, c.ok("info", "a2", "--json"), &infos)
	if len(infos) != 1 || infos[0].UID != 65534 || infos[0].GID != 100 || infos[0].Mode != "0640" {
		t.Fatalf("info a2 --json after rename: %+v, want uid 65534 gid 100 mode 0640", infos)
	}
	if js := c.ok("info", "d", "--json"); !strings.Contains(js, `"uid": 0`) || !strings.Contains(js, `"gid": 6`) || !strings.Contains(js, `"mode": "0600"`) {
		t.Errorf("info d --json lacks the default owner:\n%s", js)
	}
	c.fail(`mode "01777" has bits beyond the permission bits 0777`, "create", "x", "--notable", "--mode", "01777")
	c.fail(`--mode: mode "" is not an octal number`, "create", "x", "--notable", "--mode", "")
	c.fail(`--mode: mode "99999" is not an octal number`, "create", "x", "--notable", "--mode", "99999")
	c.fail(`mode "rw" is not an octal number`, "create", "x", "--notable", "--mode", "rw")
	c.fail("uid 4294967295 is (uid_t)-1", "create", "x", "--notable", "--uid", "4294967295")
	c.fail(`invalid argument "-1" for "-U, --uid"`, "create", "x", "--notable", "--uid", "-1")
	if out := c.ok("ls"); strings.Contains(out, "x") {
		t.Errorf("a refused create made a device: %s", out)
	}
}
