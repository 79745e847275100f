package snapshot_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
)

const (
	originBytes = 256 << 10 // 64 chunks of 4 KiB
	cowBytes    = 512 << 10
	sectors     = originBytes / 512
)

// world is an origin device `vol` (snapshot-origin over the memory device
// "orig") with snapshots s0..s3 whose COW devices are cow0..cow3.
type world struct {
	t    testing.TB
	m    *dm.Manager
	orig *backingtest.Mem
	cows []*backingtest.Mem
	vol  *dm.Device
}

func newWorld(t testing.TB, caps backing.Capability) *world {
	return newWorldCaps(t, caps, cowBytes)
}

// newWorldWith makes cow0 cowSize bytes and the others the default size.
func newWorldWith(t testing.TB, cowSize int64) *world {
	return newWorldCaps(t, 0, cowSize)
}

func newWorldCaps(t testing.TB, caps backing.Capability, cow0 int64) *world {
	return newWorldCOWCaps(t, caps, cow0, 0)
}

// newWorldCOWCaps gives the COW devices cowCaps too (backing.DAX: memory
// that first writes copy straight into).
func newWorldCOWCaps(t testing.TB, caps backing.Capability, cow0 int64, cowCaps backing.Capability) *world {
	w := &world{t: t, orig: backingtest.NewMem("orig", originBytes, caps)}
	for i := range 4 {
		size := int64(cowBytes)
		if i == 0 {
			size = cow0
		}
		w.cows = append(w.cows, backingtest.NewMem(fmt.Sprintf("cow%d", i), size, cowCaps))
	}
	reg := dm.NewRegistry()
	all.Register(reg)
	w.m = dm.NewManager(reg, dm.NewDevicePool(backingtest.Opener(append([]*backingtest.Mem{w.orig}, w.cows...)...)))
	var err error
	w.vol, err = w.m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot-origin orig", sectors)})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) snapTable(i int, typ string) string {
	return fmt.Sprintf("0 %d snapshot orig cow%d %s 8", sectors, i, typ)
}

// takeSnapshot creates snapshot i the way LVM does: origin suspended while
// the snapshot device is created and resumed.
func (w *world) takeSnapshot(i int, typ string) *dm.Device {
	w.t.Helper()
	clear(w.cows[i].Bytes()[:4096]) // a fresh COW starts with a zeroed header
	if err := w.vol.Suspend(dm.SuspendOptions{}); err != nil {
		w.t.Fatal(err)
	}
	d, err := w.m.Create(fmt.Sprintf("s%d", i), dm.CreateOptions{Table: w.snapTable(i, typ)})
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.vol.Resume(); err != nil {
		w.t.Fatal(err)
	}
	return d
}

func read(t testing.TB, d *dm.Device, off, n int64) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := d.ReadAt(p, off); err != nil {
		t.Fatalf("read %s %d+%d: %v", d.Name(), off, n, err)
	}
	return p
}

func status(t testing.TB, d *dm.Device) string {
	t.Helper()
	s, err := d.Status(dm.Live)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(s)
}

// TestSnapshot_model runs random origin and snapshot writes, prepared
// bursts of origin writes (PrepareWrites), snapshot creation, removal and
// reactivation (persistent stores reload from the COW device), with COWs
// on memory (copies go straight in) or not, against byte-slice models of
// the origin and each snapshot.
func TestSnapshot_model(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		cowCaps := rapid.SampledFrom([]backing.Capability{0, backing.DAX}).Draw(rt, "cowCaps")
		w := newWorldCOWCaps(t, 0, cowBytes, cowCaps)
		origin := make([]byte, originBytes)
		models := map[int][]byte{}
		types := map[int]string{}
		devs := map[int]*dm.Device{}
		check := func(i int) {
			if got := read(t, devs[i], 0, originBytes); !bytes.Equal(got, models[i]) {
				rt.Fatalf("snapshot s%d differs from its model (status %s)", i, status(t, devs[i]))
			}
		}
		randRange := func(label string) (int64, int64) {
			off := rapid.Int64Range(0, originBytes-1).Draw(rt, label+"off")
			n := rapid.Int64Range(1, min(originBytes-off, 3*4096+100)).Draw(rt, label+"n")
			return off, n
		}
		fill := func(n int64, seed int) []byte {
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(seed*31 + j)
			}
			return p
		}
		for step := range rapid.IntRange(1, 40).Draw(rt, "steps") {
			free := -1
			for i := range 4 {
				if devs[i] == nil {
					free = i
					break
				}
			}
			switch op := rapid.IntRange(0, 6).Draw(rt, fmt.Sprintf("op%d", step)); {
			case op == 0 && free >= 0:
				typ := rapid.SampledFrom([]string{"P", "PO", "N"}).Draw(rt, "type")
				devs[free] = w.takeSnapshot(free, typ)
				models[free] = bytes.Clone(origin)
				types[free] = typ
			case op == 1:
				off, n := randRange("o")
				p := fill(n, step)
				if _, err := w.vol.WriteAt(p, off); err != nil {
					rt.Fatalf("origin write: %v", err)
				}
				copy(origin[off:], p)
			case op == 2 && len(devs) > 0:
				i := rapid.SampledFrom(keys(devs)).Draw(rt, "snap")
				off, n := randRange("s")
				p := fill(n, step+1000)
				if _, err := devs[i].WriteAt(p, off); err != nil {
					rt.Fatalf("snapshot s%d write: %v", i, err)
				}
				copy(models[i][off:], p)
			case op == 3 && len(devs) > 0:
				i := rapid.SampledFrom(keys(devs)).Draw(rt, "snap")
				check(i)
			case op == 4 && len(devs) > 0:
				// Remove; a persistent snapshot comes back with its data.
				i := rapid.SampledFrom(keys(devs)).Draw(rt, "snap")
				if err := w.m.Remove(devs[i].Name(), dm.RemoveOptions{}); err != nil {
					rt.Fatal(err)
				}
				delete(devs, i)
				if types[i] != "N" && rapid.Bool().Draw(rt, "reactivate") {
					d, err := w.m.Create(fmt.Sprintf("s%d", i), dm.CreateOptions{Table: w.snapTable(i, types[i])})
					if err != nil {
						rt.Fatalf("reactivate s%d: %v", i, err)
					}
					devs[i] = d
					check(i)
				} else {
					delete(models, i)
				}
			case op == 6:
				// A burst's head start (the NBD reader's): no data changes,
				// some exceptions are committed early.
				var rs []dm.Range
				for k := range rapid.IntRange(1, 4).Draw(rt, "ranges") {
					off, n := randRange(fmt.Sprintf("p%d", k))
					rs = append(rs, dm.Range{Off: off, Len: n})
				}
				if err := w.vol.PrepareWrites(rs); err != nil {
					rt.Fatalf("origin PrepareWrites: %v", err)
				}
			case op == 5:
				off, n := randRange("r")
				if got := read(t, w.vol, off, n); !bytes.Equal(got, origin[off:off+n]) {
					rt.Fatalf("origin read %d+%d differs", off, n)
				}
			}
		}
		for i := range devs {
			check(i)
			if s := status(t, devs[i]); !strings.Contains(s, "/") {
				rt.Fatalf("s%d status %q", i, s)
			}
		}
		if !bytes.Equal(w.orig.Bytes(), origin) {
			rt.Fatal("origin device differs from the model")
		}
		for _, d := range devs {
			w.m.Remove(d.Name(), dm.RemoveOptions{})
		}
		w.m.Remove("vol", dm.RemoveOptions{})
	})
}

func keys(m map[int]*dm.Device) []int {
	var out []int
	for i := range 4 {
		if m[i] != nil {
			out = append(out, i)
		}
	}
	return out
}

// waitMerged polls status until the merge has finished (allocated ==
// metadata) or failed.
func waitMerged(t testing.TB, d *dm.Device) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		s := status(t, d)
		if u, ok := snapshot.UsageOf(d); ok && u.State == snapshot.Valid && u.Allocated == u.Metadata {
			return s
		}
		if strings.HasSuffix(s, "Merge failed") || strings.HasSuffix(s, "Invalid") {
			t.Fatalf("merge: %s", s)
		}
		if ctx.Err() != nil {
			t.Fatalf("merge did not finish: %s", s)
		}
		time.Sleep(time.Millisecond)
	}
}
