package daemon_test

import (
	"math"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that names a line-, column- or path-based output cannot carry
// (blanks, newlines, control characters) are refused by every verb that
// names something new, with a message that says which character, and
// that nothing is left behind.
func TestInputs_namesOutputCannotCarry(t *testing.T) {
	e := newEnv(t)
	e.create("ok", "0 8 zero")
	e.pmemVol("vol", 1<<20)
	before := e.devNames()
	for _, bad := range []struct{ name, says string }{
		{"a\nb", "a newline at byte 1"},
		{"a b", "a space at byte 1"},
		{"a\tb", "a tab at byte 1"},
		{"x\x1b[2J", "control"},
		{"x\u00a0y", "blank"},
		{"x\u2028y", "blank"},
		{"x\xffy", "not UTF-8"},
	} {
		_, err := e.c.Create(wire.DeviceCreate{Name: bad.name, Table: "0 8 zero"})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
		_, err = e.c.Rename("ok", wire.Rename{NewName: bad.name})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
		_, err = e.c.PmemCreate(wire.PmemCreate{Name: bad.name, Size: 1 << 20})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
		_, err = e.c.SnapshotCreate(wire.SnapshotCreate{Origin: "vol", Name: bad.name})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
		_, err = e.c.Create(wire.DeviceCreate{Name: "u", UUID: bad.name, Table: "0 8 zero"})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
	}
	if got := e.devNames(); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Fatalf("devices after refused names: %q, want %q", got, before)
	}
	if ps, err := e.c.PmemList(); err != nil || len(ps) != 1 {
		t.Fatalf("regions after refused names: %+v, %v; want only vol's", ps, err)
	}
}

// Ensure that sizes near the int64 limit are refused as too large, not
// wrapped around into "too small" or a negative suggestion.
func TestInputs_hugeSizes(t *testing.T) {
	e := newEnv(t)
	e.pmemVol("vol", 1<<20)
	_, err := e.c.SnapshotCreate(wire.SnapshotCreate{Origin: "vol", Name: "s", COWSize: math.MaxInt64})
	wantCode(t, err, wire.CodeInvalidArgument, "9223372036854775807 bytes is too large", "full copy of vol takes")
	_, err = e.c.PmemCreate(wire.PmemCreate{Name: "big", Size: math.MaxInt64})
	wantCode(t, err, wire.CodeInvalidArgument, "9223372036854775807 bytes is more than any memory")
	if got := e.devNames(); strings.Join(got, " ") != "vol" {
		t.Fatalf("devices after refused sizes: %q, want only vol", got)
	}
}
