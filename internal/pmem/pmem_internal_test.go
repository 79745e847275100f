package pmem

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
)

// Ensure that a region's users are the tables naming its file, by its
// path or by another path to the same file, and not a /dev/mapper path
// or a file that only shares a prefix.
func TestNamesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "r2")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		tables []string
		want   bool
	}{
		{"none", nil, false},
		{"empty slots", []string{"", ""}, false},
		{"by path", []string{"", "0 8 linear " + path + " 0"}, true},
		{"by another path", []string{"0 8 linear " + link + " 0"}, true},
		{"second line", []string{"0 8 linear " + other + " 0\n8 8 linear " + path + " 0"}, true},
		{"other file", []string{"0 8 linear " + other + " 0"}, false},
		{"prefix only", []string{"0 8 linear " + path + "x 0"}, false},
		{"mapper device", []string{"0 8 linear " + dm.MapperPrefix + "r 0"}, false},
	}
	for _, tc := range cases {
		if got := namesFile(tc.tables, path, fi); got != tc.want {
			t.Errorf("%s: namesFile(%q) = %v, want %v", tc.name, tc.tables, got, tc.want)
		}
	}
}

// Ensure that mountinfo's octal escapes come undone and that anything
// else is kept as written.
func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		"/dev/shm":           "/dev/shm",
		`/mnt/a\040b`:        "/mnt/a b",
		`/mnt/tab\011x\134y`: "/mnt/tab\tx\\y",
		`/mnt/bad\09x`:       `/mnt/bad\09x`,
		`/mnt/end\04`:        `/mnt/end\04`,
	} {
		if got := UnescapeMount(in); got != want {
			t.Errorf("UnescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// Ensure that region names follow the device name rules, without a
// leading dot, and that a refusal is an invalid argument saying what to
// use.
func TestCheckRegionName(t *testing.T) {
	for _, ok := range []string{"r", "vol-mem", "a.b", strings.Repeat("x", dm.MaxNameLen)} {
		if err := checkRegionName("pmem create", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".hidden", strings.Repeat("x", dm.MaxNameLen+1), "a b", "a\nb"} {
		err := checkRegionName("pmem create", bad)
		if !errors.Is(err, dm.ErrInvalidArgument) || !strings.Contains(err.Error(), "pmem create") {
			t.Errorf("%q: %v, want an invalid argument naming the operation", bad, err)
		}
	}
}

// Ensure that a region record's owner is the defaults when it has none
// or one that does not check (with a note saying so), and as recorded
// otherwise.
func TestRegionOwner(t *testing.T) {
	if o, problem := regionOwner(state.Region{}); o != access.Default() || problem != "" {
		t.Errorf("no owner: %v %q, want the defaults and no problem", o, problem)
	}
	want := access.Owner{UID: 7, GID: 8, Mode: 0o640}
	if o, problem := regionOwner(state.Region{Owner: RecordOwner(want)}); o != want || problem != "" {
		t.Errorf("recorded %v: %v %q", want, o, problem)
	}
	o, problem := regionOwner(state.Region{Owner: &state.Owner{UID: 7, Mode: 0o7777}})
	if o != access.Default() || !strings.Contains(problem, "not valid") {
		t.Errorf("bad mode: %v %q, want the defaults and a problem", o, problem)
	}
}
