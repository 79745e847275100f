package backing

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/testutil"
)

func TestParseDevNumber(t *testing.T) {
	for _, c := range []struct {
		in           string
		major, minor uint32
		ok           bool
	}{
		{"7:0", 7, 0, true}, {"259:12", 259, 12, true}, {"4095:1048575", 4095, 1048575, true},
		{"4096:0", 0, 0, false}, {"0:1048576", 0, 0, false}, {"7", 0, 0, false}, {":1", 0, 0, false},
		{"1:", 0, 0, false}, {"+7:0", 0, 0, false}, {"7:-1", 0, 0, false}, {"7:0:1", 0, 0, false},
		{"a:b", 0, 0, false}, {"", 0, 0, false}, {"/dev/7:0", 0, 0, false},
	} {
		ma, mi, err := parseDevNumber(c.in)
		if (err == nil) != c.ok || ma != c.major || mi != c.minor {
			t.Errorf("parseDevNumber(%q) = %d, %d, %v; want %d, %d, ok=%v", c.in, ma, mi, err, c.major, c.minor, c.ok)
		}
	}
}

// Ensure that major:minor resolution reads DEVNAME from sysfs and checks
// the node, with errors that say what is wrong. The fake /dev needs mknod.
func TestResolveDevNumber(t *testing.T) {
	testutil.RequireRoot(t)
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	uevent := func(num, text string) {
		dir := filepath.Join(sys, "dev", "block", num)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "uevent"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	node := func(name string, mode uint32, major, minor uint32) {
		p := filepath.Join(dev, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := unix.Mknod(p, mode|0o600, int(unix.Mkdev(major, minor))); err != nil {
			t.Fatalf("mknod %s: %v", p, err)
		}
	}
	uevent("7:0", "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n")
	node("loop0", unix.S_IFBLK, 7, 0)
	uevent("259:1", "MAJOR=259\nMINOR=1\nDEVNAME=nvme/disk1\n")
	node("nvme/disk1", unix.S_IFBLK, 259, 1)
	uevent("8:0", "DEVNAME=sda\n")
	node("sda", unix.S_IFBLK, 8, 16) // a node for another device
	uevent("8:1", "DEVNAME=sda1\n")
	node("sda1", unix.S_IFCHR, 8, 1) // a character device with the number
	uevent("8:2", "DEVNAME=sda2\n")  // no node
	uevent("8:3", "MAJOR=8\n")
	uevent("8:4", "DEVNAME=../etc/passwd\n")
	for _, c := range []struct{ in, want, err string }{
		{"7:0", filepath.Join(dev, "loop0"), ""},
		{"259:1", filepath.Join(dev, "nvme/disk1"), ""},
		{"7:1", "", "no such device"},
		{"8:0", "", "is not that device (it is 8:16"},
		{"8:1", "", "is not that device"},
		{"8:2", "", "is devtmpfs mounted"},
		{"8:3", "", "no usable DEVNAME"},
		{"8:4", "", "no usable DEVNAME"},
	} {
		got, err := resolveDevNumber(sys, dev, c.in)
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("resolveDevNumber(%s) = %q, %v; want %q", c.in, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), c.in)):
			t.Errorf("resolveDevNumber(%s) = %q, %v; want an error naming it and saying %q", c.in, got, err, c.err)
		}
	}
}
