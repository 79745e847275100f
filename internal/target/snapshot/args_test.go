package snapshot_test

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
)

// Arguments print as the kernel's table does: canonical store type,
// features counted and in the kernel's order, nothing for no features.
func TestArgs_kernelText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/dev/mapper/v-real /c P 8", "/dev/mapper/v-real /c P 8"},
		{"o c po 16", "o c PO 16"},
		{"o c n 8 0", "o c N 8"},
		{"o c P 0 1 discard_zeroes_cow", "o c P 0 1 discard_zeroes_cow"},
		{"o c P 8 2 discard_passdown_origin discard_zeroes_cow", "o c P 8 2 discard_zeroes_cow discard_passdown_origin"},
		{"  o\tc P   8 ", "o c P 8"},
	} {
		a, err := snapshot.Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got := a.String(); got != c.want {
			t.Errorf("Parse(%q).String() = %q, want %q", c.in, got, c.want)
		}
	}
	a := snapshot.Args{Origin: "o", COW: "c", Store: exstore.Persistent, Chunk: 8}
	if got, want := a.Line(snapshot.MergeType, 512).String(), "0 512 snapshot-merge o c P 8"; got != want {
		t.Errorf("Line = %q, want %q", got, want)
	}
}

// Bad arguments are refused with an error that says what is wrong.
func TestArgs_refused(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "want at least 4 arguments"},
		{"o c P", "want at least 4 arguments <origin> <COW device> <P|PO|N> <chunk size>, got 3"},
		{"o c X 8", `invalid store type "X"`},
		{"o c P -1", "invalid chunk size"},
		{"o c P 99999999999999999999999", "invalid chunk size"},
		{"o c P 8 x", `invalid number of feature arguments "x"`},
		{"o c P 8 3 a b c", `invalid number of feature arguments "3"`},
		{"o c P 8 1", "1 feature arguments announced, 0 given"},
		{"o c P 8 1 bogus", `unrecognised feature requested: "bogus"`},
		{"o c P 8 1 discard_passdown_origin", "depends on discard_zeroes_cow"},
	} {
		if a, err := snapshot.Parse(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %+v, %v; want an error containing %q", c.in, a, err, c.want)
		}
	}
	for _, args := range [][]string{{"", "c", "P", "8"}, {"o", "a b", "P", "8"}, {"o\n", "c", "P", "8"}} {
		if a, err := snapshot.ParseArgs(args); err == nil || !strings.Contains(err.Error(), "without blanks") {
			t.Errorf("ParseArgs(%q) = %+v, %v; want a refused device path", args, a, err)
		}
	}
}

// Any valid Args prints as text that parses back to it, field by field
// and as one string.
func TestArgs_roundTripProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"/dev/mapper/vol-real", "/var/lib/daxsnap/cow/s1.cow", "cow0", "o"}
	features := []snapshot.Features{{}, {DiscardZeroesCOW: true}, {DiscardZeroesCOW: true, DiscardPassdownOrigin: true}}
	for range 2000 {
		a := snapshot.Args{
			Origin:   names[rng.IntN(len(names))],
			COW:      names[rng.IntN(len(names))],
			Store:    exstore.StoreType(1 + rng.IntN(3)),
			Chunk:    dm.Sector(rng.Uint64N(uint64(dm.MaxSectors) + 1)),
			Features: features[rng.IntN(len(features))],
		}
		for _, text := range []string{a.String(), strings.Join(a.Fields(), "  ")} {
			got, err := snapshot.Parse(text)
			if err != nil || !reflect.DeepEqual(got, a) {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", text, got, err, a)
			}
		}
	}
}

// FuzzParseArgs: no input makes Parse panic, and whatever it accepts
// prints as text that parses back to the same Args and prints the same.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"o c P 8", "o c po 16 1 discard_zeroes_cow", "o c N 8 2 discard_zeroes_cow discard_passdown_origin",
		"o c P", "o c X 8", "o c P 8 3", "o c P 18446744073709551616", "o c P 8 1 discard_passdown_origin",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := snapshot.Parse(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("Parse(%q): empty error", s)
			}
			return
		}
		text := a.String()
		b, err := snapshot.Parse(text)
		if err != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("Parse(%q) = %+v; its text %q parses as %+v, %v", s, a, text, b, err)
		}
		if b.String() != text {
			t.Fatalf("text %q prints back as %q", text, b.String())
		}
	})
}
