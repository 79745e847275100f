package main

import (
	"slices"
	"strings"
	"testing"
)

// Ensure that dmsetup's -j MAJ -m MIN become the argument MAJ:MIN where
// the first of them stood, in every spelling, and that a half is refused.
func TestMajorMinorArgs(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"info -j 254 -m 3", "info 254:3"},
		{"rename -j 254 -m 3 new", "rename 254:3 new"},
		{"remove --major=254 --minor 3 --force", "remove 254:3 --force"},
		{"info -j254 -m3 -c", "info 254:3 -c"},
		{"info lin", "info lin"},
		{"create x -- -j 1", "create x -- -j 1"},
	} {
		got, err := majorMinorArgs(strings.Fields(c.in))
		if err != nil || !slices.Equal(got, strings.Fields(c.want)) {
			t.Errorf("majorMinorArgs(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"info -j 254", "info -m 3", "info -j x -m 3", "info -j"} {
		if _, err := majorMinorArgs(strings.Fields(in)); err == nil {
			t.Errorf("majorMinorArgs(%q): no error", in)
		}
	}
}

// Ensure that a device verb takes MAJ:MIN (or -j -m) where it takes a
// name, that a device really called so keeps its name, and that numbers
// no device has are refused saying so.
func TestCLI_deviceByNumber(t *testing.T) {
	c := newCLI(t)
	c.ok("create", "a", "--table", "0 8 zero")
	c.ok("create", "b", "--table", "0 8 zero")
	c.ok("create", "254:0", "--table", "0 8 zero") // a name that looks like numbers
	if out := c.ok("info", "254:1"); !strings.HasPrefix(out, "Name:              b\n") {
		t.Errorf("info 254:1:\n%s", out)
	}
	if out := c.ok("table", "-j", "254", "-m", "1"); out != "0 8 zero \n" {
		t.Errorf("table -j 254 -m 1: %q", out)
	}
	if out := c.ok("info", "254:0"); !strings.HasPrefix(out, "Name:              254:0\n") {
		t.Errorf("info 254:0 (a device of that name exists):\n%s", out)
	}
	c.ok("rename", "254:1", "b2")
	c.ok("remove", "-j", "254", "-m", "1")
	if out := c.ok("ls"); out != "254:0\t(254:2)\na\t(254:0)\n" {
		t.Errorf("ls after removing 254:1: %q", out)
	}
	c.fail("no device has major 254 and minor 9", "info", "254:9")
	if errOut := c.fail("4294967296:0", "info", "4294967296:0"); strings.Contains(errOut, "no device has major") {
		t.Errorf("info 4294967296:0 (a major past 32 bits): %q names numbers it was not given", errOut)
	}
	c.fail("-j MAJOR and -m MINOR name a device together", "info", "-j", "254")
}

// Ensure that ls -o blkdevname names each device dm-MINOR and, with no
// devices, says so as plain ls does.
func TestCLI_lsBlkdevname(t *testing.T) {
	c := newCLI(t)
	golden(t, "ls -o blkdevname, no devices", c.ok("ls", "-o", "blkdevname"), noDevices)
	c.ok("create", "a", "--table", "0 8 zero")
	golden(t, "ls -o blkdevname", c.ok("ls", "-o", "blkdevname"), "a\t(dm-0)\n")
}
