package dm_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
)

func TestParseTable_valid(t *testing.T) {
	got, err := dm.ParseTable("# comment\n\n0 8 linear /dev/a 0\n  8\t16 zero\n24 8 striped 2 8 /a 0 /b 0   \n")
	must(t, err)
	want := []dm.TableLine{
		{Start: 0, Len: 8, Type: "linear", Args: []string{"/dev/a", "0"}, Line: 3},
		{Start: 8, Len: 16, Type: "zero", Line: 4},
		{Start: 24, Len: 8, Type: "striped", Args: []string{"2", "8", "/a", "0", "/b", "0"}, Line: 5},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if s := dm.FormatTable(got); s != "0 8 linear /dev/a 0\n8 16 zero\n24 8 striped 2 8 /a 0 /b 0\n" {
		t.Fatalf("FormatTable = %q", s)
	}
}

func TestParseTable_errors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"empty", "", "table is empty"},
		{"only comments", "# nothing\n\n", "table is empty"},
		{"too few fields", "0 8", "line 1: 2 field(s)"},
		{"bad start", "x 8 zero", `line 1 (zero): start: "x" is not a sector number`},
		{"negative length", "0 -8 zero", `length: "-8" is not a sector number`},
		{"huge start", "0 99999999999999999999 zero", "is too large"},
		{"sum overflows", "0 18014398509481983 zero\n18014398509481983 1 zero", "exceed the largest device"},
		{"zero length", "0 0 zero", "line 1 (zero): zero length"},
		{"not at zero", "8 8 zero", "gap in table: line starts at sector 8 but the previous lines end at sector 0 (8 sectors unmapped)"},
		{"gap", "0 8 zero\n16 8 zero", "line 2 (zero): gap in table: line starts at sector 16 but the previous lines end at sector 8"},
		{"overlap", "0 8 zero\n4 8 zero", "line 2 (zero): overlap in table: line starts at sector 4 but the previous lines already map up to sector 8"},
		{"out of order", "0 8 zero\n16 8 zero\n8 8 zero", "gap in table"},
		{"line numbers count comments", "# c\n0 8 zero\n\n9 1 zero", "line 4 (zero): gap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dm.ParseTable(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseTable(%q) = %v, want error containing %q", tc.text, err, tc.want)
			}
			if !errors.Is(err, dm.ErrInvalidTable) {
				t.Fatalf("error %v is not ErrInvalidTable", err)
			}
		})
	}
}

func TestBuildTable_errors(t *testing.T) {
	r := newRig(t)
	for _, tc := range []struct {
		name, text, want string
		class            error
	}{
		{"unknown target", "0 8 mirror x", `vol: line 1 (mirror): unknown target type "mirror"; known types: error, fake`, dm.ErrUnknownTarget},
		{"bad args", "0 8 fake mem", "vol: line 1 (fake): want <dev> <offset> [nodax], got 1 arguments", dm.ErrInvalidTable},
		{"missing device", "0 8 fake /nonexistent 0", "line 1 (fake): open /nonexistent: no such file", dm.ErrInvalidTable},
		{"device too small", "0 4096 fake mem 0", "device mem has 2048 sectors (1048576 bytes), too small for sectors 0..4096", dm.ErrInvalidTable},
		{"offset past end", "0 8 fake mem 2044", "too small for sectors 2044..2052", dm.ErrInvalidTable},
		{"second line bad", "0 8 fake mem 0\n8 8 error x", "line 2 (error): takes no arguments", dm.ErrInvalidTable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dm.BuildTable(r.m.Registry(), r.pool, "vol", tc.text, dm.ReadWrite)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("BuildTable(%q) = %v, want error containing %q", tc.text, err, tc.want)
			}
			if !errors.Is(err, tc.class) {
				t.Fatalf("error %v is not %v", err, tc.class)
			}
			if n := r.pool.Len(); n != 0 {
				t.Fatalf("%d devices left open after a failed build", n)
			}
		})
	}
}

// FuzzParseTable: parsing never panics, and an accepted table re-prints to
// a fixed point that parses to the same lines.
func FuzzParseTable(f *testing.F) {
	for _, s := range []string{
		"0 8 linear /dev/a 0",
		"0 8 zero\n8 8 error\n",
		"# c\n0 16 striped 2 8 /a 0 /b 0\n",
		"0 8 zero\n4 8 zero",
		"0 0 zero",
		"\t0   1 x\t a  b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		lines, err := dm.ParseTable(text)
		if err != nil {
			if !errors.Is(err, dm.ErrInvalidTable) {
				t.Fatalf("error %v is not ErrInvalidTable", err)
			}
			return
		}
		printed := dm.FormatTable(lines)
		again, err := dm.ParseTable(printed)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", printed, err)
		}
		if dm.FormatTable(again) != printed {
			t.Fatalf("not a fixed point: %q -> %q", printed, dm.FormatTable(again))
		}
		for i := range lines {
			a, b := lines[i], again[i]
			if a.Start != b.Start || a.Len != b.Len || a.Type != b.Type || !reflect.DeepEqual(a.Args, b.Args) {
				t.Fatalf("line %d changed: %+v -> %+v", i, a, b)
			}
		}
	})
}
