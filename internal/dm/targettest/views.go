package targettest

import (
	"bytes"

	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// SnapshotCase describes two views of one volume: an origin and a
// snapshot of it, two mapped devices over shared backing devices, as
// snapshot-origin and snapshot make them. RunSnapshot checks them
// against a model that keeps the snapshot's point-in-time image while the
// origin changes.
type SnapshotCase struct {
	Types []*dm.TargetType // registered with the Manager the views live in
	// Devices[0] holds the origin's data, mapped one to one by the origin
	// view (as snapshot-origin maps its device). Devices that start
	// Zeroed are fresh (a COW device); the others start random.
	Devices []Device
	// Origin and Snapshot are the tables of the two views. The snapshot
	// is taken as LVM takes it: created while the origin is suspended.
	Origin, Snapshot string
	// Reload: the snapshot keeps its image when its device is removed and
	// created again (a persistent store). Without it, reloading is not
	// exercised.
	Reload bool
}

// RunSnapshot is the two-view property test: random reads, writes,
// write-zeroes, discards (on the origin) and flushes on either view, and,
// when the origin's table is DAX-capable, stores through the origin's
// memory after PrepareWrite, as the DAX fault path makes them. Reads of
// the snapshot must return its image as it was when it was taken (plus
// the snapshot's own writes), reads of the origin the latest writes; the
// origin's device must hold the origin's image after every step; at the
// end both views are read whole, removed, and every device must be back
// in the pool.
func RunSnapshot(tb TB, c SnapshotCase) {
	tb.Helper()
	if len(c.Devices) == 0 || c.Origin == "" || c.Snapshot == "" {
		tb.Fatalf("targettest: SnapshotCase needs Devices, an Origin and a Snapshot table")
	}
	rapid.Check(tb, func(t *rapid.T) {
		r := newRig(c.Devices, rapid.Uint64().Draw(t, "device-seed"))
		reg := dm.NewRegistry()
		for _, tt := range c.Types {
			reg.Register(tt)
		}
		v := &views{c: c, t: t, r: r, mgr: dm.NewManager(reg, r.pool), origin: bytes.Clone(r.imgs[0])}
		var err error
		if v.od, err = v.mgr.Create("origin", dm.CreateOptions{Table: c.Origin}); err != nil {
			t.Fatalf("create the origin with table %q: %v", c.Origin, err)
		}
		v.size = v.od.Size()
		v.origin = v.origin[:v.size]
		v.take()
		defer v.remove()
		t.Repeat(v.actions())
		v.readWhole()
	})
}

// views is one run: the two mapped devices and the model's two images.
type views struct {
	c        SnapshotCase
	t        *rapid.T
	r        *rig
	mgr      *dm.Manager
	od, sd   *dm.Device // the origin and the snapshot
	size     int64
	origin   []byte // what the origin must read
	snapshot []byte // what the snapshot must read
	taken    []byte // the origin when the snapshot was taken
}

// take creates the snapshot device with the origin suspended; the model's
// snapshot image is the origin's image of that moment.
func (v *views) take() {
	if err := v.od.Suspend(dm.SuspendOptions{}); err != nil {
		v.t.Fatalf("suspend the origin: %v", err)
	}
	var err error
	if v.sd, err = v.mgr.Create("snapshot", dm.CreateOptions{Table: v.c.Snapshot}); err != nil {
		v.t.Fatalf("create the snapshot with table %q: %v", v.c.Snapshot, err)
	}
	if err := v.od.Resume(); err != nil {
		v.t.Fatalf("resume the origin: %v", err)
	}
	if v.sd.Size() != v.size {
		v.t.Fatalf("the snapshot has %d bytes, its origin %d", v.sd.Size(), v.size)
	}
	if v.snapshot == nil {
		v.snapshot, v.taken = bytes.Clone(v.origin), bytes.Clone(v.origin)
	}
}

func (v *views) remove() {
	for _, name := range []string{"snapshot", "origin"} {
		if err := v.mgr.Remove(name, dm.RemoveOptions{}); err != nil {
			v.t.Errorf("remove %s: %v", name, err)
		}
	}
	if n := v.r.pool.Len(); n != 0 {
		v.t.Errorf("%d device(s) still open in the pool after both views were removed", n)
	}
}

func (v *views) actions() map[string]func(*rapid.T) {
	a := map[string]func(*rapid.T){
		"": func(t *rapid.T) {
			if j := firstDiff(v.r.mems[0].Bytes()[:v.size], v.origin); j >= 0 {
				t.Fatalf("the origin's device differs from the origin's image at byte %d: a write did not reach it, or reached it in the wrong place", j)
			}
		},
		"read":         v.read,
		"write":        v.write,
		"write-zeroes": v.writeZeroes,
		"discard":      v.discard,
		"flush":        v.flush,
	}
	if v.od.Info().LiveCaps.Has(dm.DAX) {
		a["direct-store"] = v.directStore
	}
	if v.c.Reload {
		a["reload"] = v.reload
	}
	return a
}

// pick draws a view: its device, its image and its name.
func (v *views) pick(t *rapid.T) (*dm.Device, []byte, string) {
	if rapid.Bool().Draw(t, "snapshot") {
		return v.sd, v.snapshot, "snapshot"
	}
	return v.od, v.origin, "origin"
}

func (v *views) read(t *rapid.T) {
	d, img, name := v.pick(t)
	off, n := drawSpan(t, v.size)
	got := make([]byte, n)
	if _, err := d.ReadAt(got, off); err != nil {
		t.Fatalf("%s: ReadAt(%d bytes at %d): %v", name, n, off, err)
	}
	if j := firstDiff(got, img[off:off+n]); j >= 0 {
		t.Fatalf("%s: ReadAt(%d bytes at %d): byte %d (offset %d) is %#02x, the model says %#02x%s",
			name, n, off, j, off+int64(j), got[j], img[off+int64(j)], v.hint(name, off+int64(j), got[j]))
	}
}

// hint names the likely bug when a snapshot reads what only the origin
// holds, now or earlier (a snapshot's write then copied the chunk from
// the changed origin): it reads through to the origin, or the origin's
// write did not copy the chunk out first.
func (v *views) hint(name string, off int64, got byte) string {
	const bug = "the snapshot read through to a changed origin, or the origin's write skipped copying the chunk out"
	switch {
	case name != "snapshot":
	case got == v.origin[off]:
		return " (the origin's current byte: " + bug + ")"
	case v.snapshot[off] == v.taken[off] && v.origin[off] != v.taken[off]:
		return " (a byte the origin changed after the snapshot was taken: " + bug + ")"
	}
	return ""
}

func (v *views) write(t *rapid.T) {
	d, img, name := v.pick(t)
	off, n := drawSpan(t, v.size)
	p := drawData(t, n)
	if _, err := d.WriteAt(p, off); err != nil {
		t.Fatalf("%s: WriteAt(%d bytes at %d): %v", name, n, off, err)
	}
	copy(img[off:], p)
}

func (v *views) writeZeroes(t *rapid.T) {
	d, img, name := v.pick(t)
	off, n := drawSpan(t, v.size)
	if err := d.WriteZeroes(off, n); err != nil {
		t.Fatalf("%s: WriteZeroes(%d, %d): %v", name, off, n, err)
	}
	clear(img[off : off+n])
}

// discard discards on the origin, which then reads zeroes (as every
// backing device here does); the snapshot keeps its image. A snapshot's
// own discard depends on its features and is not modelled.
func (v *views) discard(t *rapid.T) {
	off, n := drawSpan(t, v.size)
	if err := v.od.Discard(off, n); err != nil {
		t.Fatalf("origin: Discard(%d, %d): %v", off, n, err)
	}
	clear(v.origin[off : off+n])
}

func (v *views) flush(t *rapid.T) {
	d, _, name := v.pick(t)
	if err := d.Flush(); err != nil {
		t.Fatalf("%s: Flush(): %v", name, err)
	}
}

// directStore stores through the origin's memory as a DAX client does:
// PrepareWrite first (the fault path's copy-before-write), then the store.
func (v *views) directStore(t *rapid.T) {
	off, n := drawSpan(t, v.size)
	if err := v.od.PrepareWrite(off, n); err != nil {
		t.Fatalf("origin: PrepareWrite(%d, %d): %v", off, n, err)
	}
	mem, err := v.od.DirectAccess(off, n)
	if err != nil {
		t.Fatalf("origin: DirectAccess(%d, %d): %v", off, n, err)
	}
	p := drawData(t, int64(len(mem)))
	copy(mem, p)
	copy(v.origin[off:], p)
}

// reload removes the snapshot's device and creates it again from its
// table: its image must come back.
func (v *views) reload(t *rapid.T) {
	if err := v.mgr.Remove("snapshot", dm.RemoveOptions{}); err != nil {
		t.Fatalf("remove the snapshot: %v", err)
	}
	v.take()
}

// readWhole reads both views whole and compares them with the images.
func (v *views) readWhole() {
	for _, w := range []struct {
		d    *dm.Device
		img  []byte
		name string
	}{{v.od, v.origin, "origin"}, {v.sd, v.snapshot, "snapshot"}} {
		got := make([]byte, v.size)
		if _, err := w.d.ReadAt(got, 0); err != nil {
			v.t.Fatalf("%s: read whole: %v", w.name, err)
		}
		if j := firstDiff(got, w.img); j >= 0 {
			v.t.Fatalf("%s differs from its image at byte %d: %#02x, the model says %#02x%s", w.name, j, got[j], w.img[j], v.hint(w.name, int64(j), got[j]))
		}
	}
}
