package backing

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeDAX builds a sysfs tree for character device num whose device
// directory is devPath (relative to sys), with the given attribute files
// and a subsystem link to sys/bus/<subsystem>.
func fakeDAX(t *testing.T, sys, num, devPath, subsystem string, attrs map[string]string) {
	t.Helper()
	dir := filepath.Join(sys, devPath)
	for name, value := range attrs {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(dir, 0o755)
	os.MkdirAll(filepath.Join(sys, "bus", subsystem), 0o755)
	rel, _ := filepath.Rel(dir, filepath.Join(sys, "bus", subsystem))
	if err := os.Symlink(rel, filepath.Join(dir, "subsystem")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(sys, "dev", "char", num)
	os.MkdirAll(filepath.Dir(link), 0o755)
	rel, _ = filepath.Rel(filepath.Dir(link), dir)
	if err := os.Symlink(rel, link); err != nil { // relative, as in the real /sys
		t.Fatal(err)
	}
}

func TestReadDevDAX(t *testing.T) {
	sys := t.TempDir()
	pmemDir := "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0/region0/dax0.0/dax0.0"
	fakeDAX(t, sys, "252:0", pmemDir, "dax", map[string]string{"size": "4294967296\n", "align": "2097152\n"})
	fakeDAX(t, sys, "252:1", "devices/platform/hmem.0/dax1.0", "dax", map[string]string{
		"size": "1073741824\n", "../dax_region/align": "1073741824\n"}) // before Linux 5.10: region align only
	fakeDAX(t, sys, "252:2", "devices/platform/hmem.1/dax2.0", "dax", map[string]string{"size": "8192\n"})
	fakeDAX(t, sys, "1:3", "devices/virtual/mem/null", "mem", nil)
	fakeDAX(t, sys, "252:4", "devices/x/dax4.0", "dax", map[string]string{"size": "lots\n", "align": "4096\n"})
	fakeDAX(t, sys, "252:5", "devices/x/dax5.0", "dax", map[string]string{"size": "0\n", "align": "4096\n"})
	fakeDAX(t, sys, "252:6", "devices/x/dax6.0", "dax", map[string]string{"size": "3145728\n", "align": "2097152\n"})
	fakeDAX(t, sys, "252:7", "devices/x/dax7.0", "dax", map[string]string{"size": "3145728\n", "align": "3000\n"})
	page := int64(os.Getpagesize())
	for _, c := range []struct {
		major, minor uint32
		want         daxInfo
		err          string
	}{
		{252, 0, daxInfo{size: 4 << 30, align: 2 << 20, persistent: true}, ""},
		{252, 1, daxInfo{size: 1 << 30, align: 1 << 30, persistent: false}, ""},
		{252, 2, daxInfo{size: 8192, align: page, persistent: false}, ""},
		{1, 3, daxInfo{}, "not a device-dax instance"},
		{252, 4, daxInfo{}, "want a decimal number"},
		{252, 5, daxInfo{}, "give it capacity"},
		{252, 6, daxInfo{}, "not a multiple of its alignment 2097152"},
		{252, 7, daxInfo{}, "not a power of two"},
		{252, 9, daxInfo{}, "unknown to sysfs"},
	} {
		got, err := readDevDAX(sys, c.major, c.minor)
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("readDevDAX(%d:%d) = %+v, %v; want %+v", c.major, c.minor, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("readDevDAX(%d:%d) = %+v, %v; want an error saying %q", c.major, c.minor, got, err, c.err)
		}
	}
	if _, err := readDevDAX(sys, 1, 3); !errors.Is(err, ErrUnsupported) {
		t.Errorf("a character device of another subsystem: %v, want ErrUnsupported", err)
	}
}
