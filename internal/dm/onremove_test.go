package dm_test

import (
	"slices"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// TestManager_OnRemove: the subscribers hear of every way a device goes
// (remove, the last close of a deferred removal, a create whose table
// failed), once, in order, with no lock held that would stop them from
// asking the manager or the device; not of a refused removal or a
// rename; and no more once unsubscribed.
func TestManager_OnRemove(t *testing.T) {
	r := newRig(t)
	var heard []string
	var first, second []*dm.Device
	r.m.OnRemove(func(d *dm.Device) {
		first = append(first, d)
		heard = append(heard, "first "+d.Name())
		// Neither lock held: both answer.
		if _, err := r.m.Get(d.Name()); err == nil {
			t.Errorf("OnRemove(%s): the manager still lists it", d.Name())
		}
		if in := d.Info(); in.LiveTable || !d.Removed() {
			t.Errorf("OnRemove(%s): live table %v, removed %v; want a device torn down", d.Name(), in.LiveTable, d.Removed())
		}
	})
	cancel := r.m.OnRemove(func(d *dm.Device) {
		second = append(second, d)
		heard = append(heard, "second "+d.Name())
	})

	a := r.create(t, "a", "0 16 fake mem 0")
	must(t, r.m.Rename("a", "a2"))
	must(t, r.m.Remove("a2", dm.RemoveOptions{}))

	b := r.create(t, "b", "0 16 fake mem 0")
	must(t, b.Open())
	if err := r.m.Remove("b", dm.RemoveOptions{}); err == nil {
		t.Fatal("remove of an open device succeeded")
	}
	must(t, r.m.Remove("b", dm.RemoveOptions{Deferred: true}))
	if len(first) != 1 {
		t.Fatalf("subscribers heard %v before b's last close, want only a2", heard)
	}
	must(t, b.Close())

	if _, err := r.m.Create("c", dm.CreateOptions{Table: "0 16 fake nosuch 0"}); err == nil {
		t.Fatal("create over a device that does not exist succeeded")
	}
	want := []string{"first a2", "second a2", "first b", "second b", "first c", "second c"}
	if !slices.Equal(heard, want) {
		t.Errorf("subscribers heard %q, want %q", heard, want)
	}
	if len(first) < 2 || first[0] != a || first[1] != b || !slices.Equal(first, second) {
		t.Errorf("subscribers got other devices than those removed")
	}

	cancel()
	d := r.create(t, "d", "0 16 fake mem 0")
	must(t, r.m.Remove("d", dm.RemoveOptions{}))
	if len(second) != 3 || len(first) != 4 || first[3] != d {
		t.Errorf("after unsubscribing the second: first heard %d removals, second %d; want 4 and 3", len(first), len(second))
	}
}

// TestManager_RemoveLater: the device is gone at once (not listed, its
// I/O failing) while its tables keep their devices open and the OnRemove
// subscribers wait, until the release; a second release does nothing,
// and a refused removal releases nothing.
func TestManager_RemoveLater(t *testing.T) {
	r := newRig(t)
	var heard []string
	r.m.OnRemove(func(d *dm.Device) { heard = append(heard, d.Name()) })
	a := r.create(t, "a", "0 16 fake mem 0")
	release, err := r.m.RemoveLater("a", dm.RemoveOptions{})
	must(t, err)
	if _, err := r.m.Get("a"); err == nil {
		t.Error("the manager still lists a after RemoveLater")
	}
	if in := a.Info(); in.LiveTable || !a.Removed() {
		t.Errorf("a after RemoveLater: live table %v, removed %v; want it torn down", in.LiveTable, a.Removed())
	}
	if _, err := a.ReadAt(make([]byte, 512), 0); err == nil {
		t.Error("a read of a removed device succeeded")
	}
	if n := r.pool.Len(); n != 1 || len(heard) != 0 {
		t.Fatalf("before the release: %d devices open, subscribers heard %v; want mem still open and none", n, heard)
	}
	must(t, release())
	if n := r.pool.Len(); n != 0 || !slices.Equal(heard, []string{"a"}) {
		t.Fatalf("after the release: %d devices open, subscribers heard %v; want none open and a", n, heard)
	}
	must(t, release())
	if len(heard) != 1 {
		t.Errorf("a second release ran the subscribers again: %v", heard)
	}

	b := r.create(t, "b", "0 16 fake mem 0")
	must(t, b.Open())
	release, err = r.m.RemoveLater("b", dm.RemoveOptions{})
	if err == nil {
		t.Fatal("RemoveLater of an open device succeeded")
	}
	must(t, release())
	if n := r.pool.Len(); n != 1 || len(heard) != 1 || b.Removed() {
		t.Errorf("after a refused removal's release: %d devices open, heard %v, removed %v; want b untouched", n, heard, b.Removed())
	}
	must(t, b.Close())
}
