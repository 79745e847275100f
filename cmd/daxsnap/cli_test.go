package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/target/all"
)

// Ensure that info, table, status, ls and targets print what dmsetup
// prints, for one device and for all (TestGolden_dmsetup holds them to the
// kernel's own output).
func TestCLI_golden(t *testing.T) {
	c := newCLI(t)
	out := c.ok("pmem", "create", "r", "--size", "4M")
	path := filepath.Join(c.shm, "daxsnap", "r")
	golden(t, "pmem create", out, "r: 4MiB on tmpfs at "+path+"\n")
	c.ok("create", "vol", "--table", "0 8192 linear "+path+" 0", "-u", "uuid-1")
	c.ok("create", "z", "--notable")

	golden(t, "info vol", c.ok("info", "vol"), `Name:              vol
State:             ACTIVE
Read Ahead:        256
Tables present:    LIVE
Open count:        0
Event number:      0
Major, minor:      254, 0
Number of targets: 1
UUID: uuid-1
Capabilities:      dax,wpfault (fixed: dax)
Owner:             uid 0, gid 6, mode 0600
Durability:        volatile

`)
	golden(t, "table vol", c.ok("table", "vol"), "0 8192 linear "+path+" 0\n")
	golden(t, "status vol", c.ok("status", "vol"), "0 8192 linear \n")
	golden(t, "table z", c.ok("table", "z"), "\n")
	golden(t, "table", c.ok("table"), "vol: 0 8192 linear "+path+" 0\nz: \n")
	golden(t, "status", c.ok("status"), "vol: 0 8192 linear \nz: \n")
	golden(t, "ls", c.ok("ls"), "vol\t(254:0)\nz\t(254:1)\n")
	golden(t, "sessions", c.ok("sessions"), "No DAX sessions\n")
	golden(t, "sessions --json", c.ok("sessions", "--json"), "[]\n")
	golden(t, "info z", c.ok("info", "z"), `Name:              z
State:             ACTIVE
Tables present:    None
Open count:        0
Event number:      0
Major, minor:      254, 1
Number of targets: 0
Capabilities:      none (fixed: none)
Owner:             uid 0, gid 6, mode 0600

`)

	targets := c.ok("targets")
	for _, line := range []string{"error            v1.7.0\n", "linear           v1.5.0\n", "zero             v1.2.0\n"} {
		if !strings.Contains(targets, line) {
			t.Errorf("targets lacks %q:\n%s", line, targets)
		}
	}
	if n := strings.Count(targets, "\n"); n != len(all.Types()) {
		t.Errorf("targets printed %d lines for %d types", n, len(all.Types()))
	}

	fields := strings.Fields(c.ok("pmem", "list"))
	golden(t, "pmem list", strings.Join(fields, " "), "NAME SIZE FS OWNER MODE PATH USED BY r 4MiB tmpfs 0:6 0600 "+path+" vol")

	// A region's owner, which a non-root map needs the right to.
	c.ok("pmem", "create", "mine", "--size", "4M", "--uid", "65534", "--mode", "0640")
	if out := c.ok("pmem", "list"); !strings.Contains(out, "65534:6  0640") {
		t.Errorf("pmem list after pmem create mine --uid 65534 --mode 0640:\n%s\nwant owner 65534:6 mode 0640", out)
	}
	c.fail("pmem create bad: --mode", "pmem", "create", "bad", "--size", "4M", "--mode", "04755")
}

// Ensure that the verbs change what info shows: load, suspend, resume,
// clear, rename, wipe_table, remove, read-only and deferred removal.
func TestCLI_verbs(t *testing.T) {
	c := newCLI(t)
	c.ok("create", "a", "--table", "0 8 zero")
	c.ok("load", "a", "--table", "0 16 zero")
	wantState(t, c.ok("info", "a"), "ACTIVE", "LIVE & INACTIVE")
	golden(t, "table --inactive", c.ok("table", "a", "--inactive"), "0 16 zero \n")
	golden(t, "status --inactive", c.ok("status", "a", "--inactive"), "0 16 zero \n")
	c.ok("suspend", "a")
	wantState(t, c.ok("info", "a"), "SUSPENDED", "LIVE & INACTIVE")
	c.ok("resume", "a")
	golden(t, "table after resume", c.ok("table", "a"), "0 16 zero \n")
	c.ok("reload", "a", "--table", "0 32 zero")
	c.ok("clear", "a")
	wantState(t, c.ok("info", "a"), "ACTIVE", "LIVE")
	c.ok("rename", "a", "b")
	c.ok("wipe_table", "b")
	golden(t, "table after wipe", c.ok("table", "b"), "0 16 error \n")
	c.ok("create", "ro", "--readonly", "--table", "0 8 zero")
	wantState(t, c.ok("info", "ro"), "ACTIVE (READ-ONLY)", "LIVE")
	c.ok("create", "top", "--table", "0 8 linear /dev/mapper/ro 0")
	c.ok("remove", "ro", "--deferred")
	wantState(t, c.ok("info", "ro"), "ACTIVE (READ-ONLY) (DEFERRED REMOVE)", "LIVE")
	c.ok("remove", "top")
	c.ok("remove", "b")
	c.fail("message", "message", "b", "0", "hi")
}

func wantState(t *testing.T, info, state, tables string) {
	t.Helper()
	if !strings.Contains(info, "\nState:             "+state+"\n") || !strings.Contains(info, "\nTables present:    "+tables+"\n") {
		t.Fatalf("info:\n%s\nwant State %q, Tables present %q", info, state, tables)
	}
}

// Ensure that tables come from --table, a FILE or stdin.
func TestCLI_tableSources(t *testing.T) {
	c := newCLI(t)
	file := filepath.Join(t.TempDir(), "t")
	os.WriteFile(file, []byte("0 24 zero\n"), 0o600)
	c.ok("create", "f", file)
	golden(t, "table from FILE", c.ok("table", "f"), "0 24 zero \n")
	code, _, errOut := runIn("0 40 zero\n", "--socket", c.socket, "create", "s")
	if code != 0 {
		t.Fatalf("create from stdin: %s", errOut)
	}
	golden(t, "table from stdin", c.ok("table", "s"), "0 40 zero \n")
	code, _, errOut = runIn("", "--socket", c.socket, "create", "e")
	checkFailure(t, code, errOut, "no table on stdin", []string{"create", "e"})
	c.fail("not both", "create", "x", file, "--table", "0 8 zero")
}

// Ensure that failures exit 1 with one line saying what to do.
func TestCLI_errors(t *testing.T) {
	c := newCLI(t)
	c.ok("create", "lin", "--table", "0 8 zero")
	c.fail("info nope: no such device: `daxsnap ls` lists the devices", "info", "nope")
	c.fail("lin: line 2 (zero): gap in table", "load", "lin", "--table", "0 8 zero\n16 8 zero")
	c.fail("--size is required", "pmem", "create", "r")
	c.fail(`invalid size "4X"`, "pmem", "create", "r", "--size", "4X")
	c.fail("usage: daxsnap create NAME", "create")
	c.fail("unknown command", "frob")
	c.fail("unknown flag: --bogus", "ls", "--bogus")
	c.fail("give a sector number", "message", "lin", "x", "hi")

	sock := filepath.Join(t.TempDir(), "none.sock")
	code, _, errOut := runIn("", "--socket", sock, "ls")
	checkFailure(t, code, errOut, "cannot reach daxsnap at "+sock+": start it with `daxsnap serve`", nil)
	dir := t.TempDir()
	code, _, errOut = runIn("", "--state", dir, "ls")
	checkFailure(t, code, errOut, "cannot reach daxsnap at "+dir+"/daxsnap.sock", nil)
	t.Setenv("DAXSNAP_STATE", filepath.Dir(c.socket))
	code, out, _ := runIn("", "ls")
	if code != 0 || out != "lin\t(254:0)\n" {
		t.Fatalf("ls with $DAXSNAP_STATE: %d %q", code, out)
	}
}

// Ensure that table check reports a good table and the precise error of
// a bad one, without a daemon.
func TestCLI_tableCheck(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "daxsnap-cli-test-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(shm)
	mem := filepath.Join(shm, "m")
	os.WriteFile(mem, make([]byte, 1<<20), 0o600)
	good := filepath.Join(t.TempDir(), "good")
	os.WriteFile(good, []byte(fmt.Sprintf("0 2048 linear %s 0\n2048 8 zero\n", mem)), 0o600)
	code, out, errOut := runIn("", "table", "check", good)
	if code != 0 {
		t.Fatalf("table check: %s", errOut)
	}
	golden(t, "table check", out, fmt.Sprintf(`table maps 2056 sectors (1028KiB) in 2 line(s); capabilities: none
line 1: sectors 0-2047 (2048): linear %s 0: dax,wpfault
  %s: tmpfs file, 1048576 bytes, dax,wpfault
line 2: sectors 2048-2055 (8): zero: none
`, mem, mem))
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte(fmt.Sprintf("0 4096 linear %s 0\n", mem)), 0o600)
	code, _, errOut = runIn("", "table", "check", bad)
	checkFailure(t, code, errOut, "line 1 (linear): device "+mem+" has 2048 sectors", nil)
}

// Ensure that shell completion offers the running daemon's device,
// snapshot and region names where a verb takes one, and no files there.
func TestCLI_complete(t *testing.T) {
	c := newCLI(t)
	c.ok("pmem", "create", "fast", "--size", "4M", "--dir", c.shm)
	c.ok("create", "vol", "--table", "0 8 zero")
	c.ok("create", "other", "--table", "0 8 zero")
	c.ok("snapshot", "create", "vol", "snap1", "--cow-size", "1M")
	complete := func(args ...string) string {
		t.Helper()
		return c.ok(append([]string{"__complete"}, args...)...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"info", ""}, "other\nsnap1\nvol\nvol-real\n:4\n"},
		{[]string{"status", "v"}, "vol\nvol-real\n:4\n"},
		{[]string{"rename", "vol", ""}, ":4\n"},
		{[]string{"snapshot", "merge", ""}, "snap1\n:4\n"},
		{[]string{"snapshot", "create", "o"}, "other\n:4\n"},
		{[]string{"pmem", "remove", ""}, "fast\n:4\n"},
		{[]string{"cow", "adopt", ""}, ":0\n"},
		{[]string{"cow", "adopt", "f.cow", "ot"}, "other\n:4\n"},
	} {
		if got := complete(tc.args...); got != tc.want {
			t.Errorf("__complete %q:\n%s\nwant:\n%s", tc.args, got, tc.want)
		}
	}
}
