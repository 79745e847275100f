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
		_, err := e.c.Create(bg, wire.DeviceCreate{Name: bad.name, Table: "0 8 zero"})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
		_, err = e.c.Rename(bg, "ok", wire.Rename{NewName: bad.name})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
		_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: bad.name, Size: 1 << 20})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
		_, err = e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: bad.name})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
		_, err = e.c.Create(bg, wire.DeviceCreate{Name: "u", UUID: bad.name, Table: "0 8 zero"})
		wantCode(t, err, wire.CodeInvalidArgument, bad.says)
	}
	if got := e.devNames(); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Fatalf("devices after refused names: %q, want %q", got, before)
	}
	if ps, err := e.c.PmemList(bg); err != nil || len(ps) != 1 {
		t.Fatalf("regions after refused names: %+v, %v; want only vol's", ps, err)
	}
}

// Ensure that sizes near the int64 limit are refused as too large, not
// wrapped around into "too small" or a negative suggestion.
func TestInputs_hugeSizes(t *testing.T) {
	e := newEnv(t)
	e.pmemVol("vol", 1<<20)
	_, err := e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "s", COWSize: math.MaxInt64})
	wantCode(t, err, wire.CodeInvalidArgument, "9223372036854775807 bytes is too large", "full copy of vol takes")
	_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: "big", Size: math.MaxInt64})
	wantCode(t, err, wire.CodeInvalidArgument, "9223372036854775807 bytes is more than any memory")
	if got := e.devNames(); strings.Join(got, " ") != "vol" {
		t.Fatalf("devices after refused sizes: %q, want only vol", got)
	}
}

// Ensure that state records that do not hold together are not trusted
// at start: a device record naming another device than its key creates
// neither (it used to create the one it names), a region record likewise
// is not listed, and a recorded mode of 99999 gives the device the
// restrictive defaults with a note that says so, not silently.
func TestInputs_stateRecordsThatDoNotHoldTogether(t *testing.T) {
	e := newEnv(t)
	e.createOwned("victim", "0 8 zero", 65534, 65534, "0666")
	e.createOwned("odd", "0 8 zero", 65534, 65534, "0666")
	e.region("r", 1<<20)
	e.stop()
	rewriteRecord(t, e.cfg.StateDir, "victim", func(rec map[string]any) { rec["name"] = "intruder" })
	rewriteRecord(t, e.cfg.StateDir, "odd", func(rec map[string]any) { rec["owner"].(map[string]any)["mode"] = 99999 })
	rewriteIn(t, e.cfg.StateDir, "regions", "r", func(rec map[string]any) { rec["name"] = "q" })
	e.start()
	if got := e.devNames(); strings.Join(got, " ") != "odd" {
		t.Errorf("devices after start: %q, want only odd (victim's record names intruder)", got)
	}
	in := e.info("odd")
	wantOwner(t, in, 0, 6, "0600")
	if !strings.Contains(in.Note, "recorded owner is not valid") || !strings.Contains(in.Note, "0303237") {
		t.Errorf("odd's note %q, want one saying its recorded owner (mode 0303237) is not valid", in.Note)
	}
	if ps, err := e.c.PmemList(bg); err != nil || len(ps) != 0 {
		t.Errorf("regions after start: %+v, %v; want none (r's record names q)", ps, err)
	}
	logs := e.logs.String()
	for _, want := range []string{"key=victim name=intruder", "key=r name=q", "stored under one name and names another"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	// The names are free again: creating them replaces the bad records.
	e.create("victim", "0 8 zero")
	e.restart()
	if got := e.devNames(); strings.Join(got, " ") != "odd victim" {
		t.Errorf("devices after recreating victim: %q", got)
	}
}
