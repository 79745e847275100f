package dm_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// refusedLoad checks that loading text is refused by the capability rule
// with a message containing want, and that the device is unchanged.
func refusedLoad(t *testing.T, d *dm.Device, text, want string) {
	t.Helper()
	before := d.Info()
	live, _ := d.Table(dm.Live)
	inactive, _ := d.Table(dm.Inactive)
	err := d.Load(text)
	if !errors.Is(err, dm.ErrDAXChange) {
		t.Fatalf("load %q: %v, want ErrDAXChange", text, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("load %q:\n got: %v\nwant: ...%s...", text, err, want)
	}
	after := d.Info()
	l2, _ := d.Table(dm.Live)
	i2, _ := d.Table(dm.Inactive)
	if before != after || live != l2 || inactive != i2 {
		t.Fatalf("refused load changed the device: %+v -> %+v, %q -> %q, %q -> %q", before, after, live, l2, inactive, i2)
	}
	if before.LiveTable {
		if _, err := d.WriteAt([]byte("still fine"), 0); err != nil {
			t.Fatalf("I/O after refused load: %v", err)
		}
	}
}

func TestCapabilityRule_losingRefused(t *testing.T) {
	for _, tc := range []struct {
		name, first, next, want string
	}{
		{"dax to target without direct access", "0 16 fake mem 0", "0 16 fake mem 0 nodax",
			"line 1 (fake): vol is DAX-capable; this table would make it DAX-incapable because target fake has no direct access; programs may have it mapped, so it must stay that way: remove and recreate vol when nothing has it open"},
		{"dax to regular file", "0 16 fake mem 0", "0 8 fake mem 0\n8 8 fake file 0",
			"line 2 (fake): vol is DAX-capable; this table would make it DAX-incapable because file is a regular file (capabilities: none)"},
		{"sync to volatile memory", "0 16 fake pmem 0", "0 16 fake mem 0",
			"line 1 (fake): vol is sync-capable (MAP_SYNC); this table would make it sync-incapable because mem is a tmpfs file (capabilities: dax,wpfault)"},
		{"sync to regular file names dax first", "0 16 fake pmem 0", "0 16 fake file 0",
			"vol is DAX-capable; this table would make it DAX-incapable because file is a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			d := r.create(t, "vol", tc.first)
			refusedLoad(t, d, tc.next, tc.want)
			// Also with an inactive table present: it stays.
			must(t, d.Load(tc.first))
			refusedLoad(t, d, tc.next, tc.want)
		})
	}
}

func TestCapabilityRule_firstLoadFixes(t *testing.T) {
	r := newRig(t)
	d, err := r.m.Create("vol", dm.CreateOptions{})
	must(t, err)
	must(t, d.Load("0 16 fake pmem 0")) // first load fixes dax+sync, even before resume
	refusedLoad(t, d, "0 16 fake mem 0", "sync-incapable")
	if got := d.Info().FixedCaps; got != dm.DAX|dm.Sync {
		t.Fatalf("fixed caps %v", got)
	}
}

func TestCapabilityRule_gainingAllowedThenFixed(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 16 fake file 0")
	if d.Info().FixedCaps != 0 {
		t.Fatalf("regular file device has caps %v", d.Info().FixedCaps)
	}
	// A gain that never goes live fixes nothing.
	must(t, d.Load("0 16 fake mem 0"))
	must(t, d.Clear())
	must(t, d.Load("0 16 fake file 0"))
	must(t, d.Clear())
	// A gain that goes live is fixed from then on.
	must(t, d.Load("0 16 fake mem 0"))
	must(t, d.Resume())
	if got := d.Info().FixedCaps; got != dm.DAX {
		t.Fatalf("after gaining: fixed caps %v, want dax", got)
	}
	refusedLoad(t, d, "0 16 fake file 0", "vol is DAX-capable; this table would make it DAX-incapable because file is a regular file")
	// Gaining sync on top is allowed, then fixed too.
	must(t, d.Load("0 16 fake pmem 0"))
	must(t, d.Resume())
	refusedLoad(t, d, "0 16 fake mem 0", "sync-incapable")
}

func TestCapabilityRule_errorTargetAlwaysAllowed(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 16 fake pmem 0")
	must(t, d.Load("0 8 error\n8 8 fake pmem 0"))
	must(t, d.Resume())
	must(t, d.WipeTable())
	if s, _ := d.Table(dm.Live); s != "0 16 error \n" {
		t.Fatalf("after wipe: %q", s)
	}
	if got := d.Info().LiveCaps; !got.Has(dm.DAX | dm.Sync) {
		t.Fatalf("error table caps %v, want dax and sync", got)
	}
	must(t, d.Load("0 16 fake pmem 0"))
}

// A device that starts with a table of no devices (restored as `error`
// because its backing vanished) has no capability fixed yet: its real
// table may come back whatever it offers.
func TestCapabilityRule_deviceFreeTableFixesNothing(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 16 error")
	if d.Info().FixedCaps != 0 {
		t.Fatalf("error-only table fixed %v", d.Info().FixedCaps)
	}
	must(t, d.Load("0 16 fake mem 0"))
	must(t, d.Resume())
	refusedLoad(t, d, "0 16 fake file 0", "DAX-incapable")
}
