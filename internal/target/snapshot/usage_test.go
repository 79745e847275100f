package snapshot_test

import (
	"fmt"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
)

// usageOf is UsageOf(d), checked against d's status text: the value and
// the text the kernel would print say the same, byte for byte.
func usageOf(t *testing.T, d *dm.Device) snapshot.Usage {
	t.Helper()
	u, ok := snapshot.UsageOf(d)
	if !ok {
		t.Fatalf("UsageOf(%s): not a snapshot (status %q)", d.Name(), status(t, d))
	}
	if got, want := fmt.Sprintf("0 %d %s %s", sectors, typeOf(d), u), status(t, d); got != want {
		t.Fatalf("UsageOf(%s) = %+v prints %q; status is %q", d.Name(), u, got, want)
	}
	return u
}

func typeOf(d *dm.Device) string {
	var typ string
	d.LiveTargets(func(l dm.TableLine, _ dm.Target) { typ = l.Type })
	return typ
}

// A snapshot's usage is a value in every state its status text can show.
func TestUsage_states(t *testing.T) {
	w := newWorld(t, 0)
	s0 := w.takeSnapshot(0, "P")
	if u := usageOf(t, s0); u != (snapshot.Usage{State: snapshot.Valid, Allocated: 16, Total: 1024, Metadata: 16}) {
		t.Fatalf("fresh: %+v", u)
	}
	_, err := w.vol.WriteAt(pattern(3*4096, 1), 4096)
	must(t, err)
	if u := usageOf(t, s0); u.Allocated != 40 || u.Merging || u.Merged() {
		t.Fatalf("after 3 copies: %+v", u)
	}
	if _, ok := snapshot.UsageOf(w.vol); ok {
		t.Fatal("UsageOf(snapshot-origin) says it is a snapshot")
	}

	small := newWorldWith(t, 8*4096) // header, one area, 6 data chunks
	po := small.takeSnapshot(0, "PO")
	for c := range 7 {
		po.WriteAt(pattern(4096, byte(c)), int64(c)*4096)
	}
	if u := usageOf(t, po); u.State != snapshot.Overflow {
		t.Fatalf("full PO: %+v, want Overflow", u)
	}
	small2 := newWorldWith(t, 8*4096)
	inv := small2.takeSnapshot(0, "P")
	_, err = small2.vol.WriteAt(pattern(10*4096, 3), 0)
	must(t, err)
	if u := usageOf(t, inv); u != (snapshot.Usage{State: snapshot.Invalid}) {
		t.Fatalf("full P: %+v, want Invalid", u)
	}

	// A merge: the merge target and the snapshot it took over both say
	// Merging, and Merged once every exception is back.
	must(t, w.vol.Load(fmt.Sprintf("0 %d snapshot-merge orig cow0 P 8", sectors)))
	must(t, w.vol.Resume())
	waitMerged(t, w.vol)
	if u := usageOf(t, w.vol); !u.Merging || !u.Merged() || u.Allocated != 16 {
		t.Fatalf("merged: %+v", u)
	}
	if u, ok := snapshot.UsageOf(s0); !ok || !u.Merging {
		t.Fatalf("handed-over snapshot: %+v, %v; want Merging", u, ok)
	}
}

// Every state prints as the kernel's status does.
func TestUsage_text(t *testing.T) {
	for _, c := range []struct {
		u    snapshot.Usage
		want string
	}{
		{snapshot.Usage{Allocated: 40, Total: 1024, Metadata: 16}, "40/1024 16"},
		{snapshot.Usage{State: snapshot.Invalid, Allocated: 40}, "Invalid"},
		{snapshot.Usage{State: snapshot.MergeFailed, Merging: true}, "Merge failed"},
		{snapshot.Usage{State: snapshot.Overflow}, "Overflow"},
	} {
		if got := c.u.String(); got != c.want {
			t.Errorf("%+v prints %q, want %q", c.u, got, c.want)
		}
	}
}
