package daemon_test

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// diffModel is the ground truth of changed-block tracking: which 4 KiB
// chunks of the origin were written in each interval between snapshots.
type diffModel struct {
	origin  string         // "" is vol
	snaps   []string       // in the order taken
	written []map[int]bool // written[i]: chunks written after snaps[i] was taken, before snaps[i+1]
	// uncertain chunks had a write in flight at a kill that did not reach
	// the origin: its copy-out may have, so diffs may list them or not.
	uncertain map[int]bool
}

// changed is the set of chunks written from snapshot i until snapshot j
// (j == len(snaps): until now), sorted.
func (m *diffModel) changed(i, j int) []int {
	set := map[int]bool{}
	for k := i; k < j; k++ {
		for c := range m.written[k] {
			set[c] = true
		}
	}
	var out []int
	for c := range set {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// chunksOf expands a diff's extents into 4 KiB chunk numbers.
func chunksOf(t *testing.T, d wire.SnapshotDiff) []int {
	t.Helper()
	if d.ChunkSize != blk {
		t.Fatalf("diff %s %s: chunk size %d, want %d", d.From, d.To, d.ChunkSize, blk)
	}
	var out []int
	var sum int64
	for i, e := range d.Extents {
		if e.Off%blk != 0 || e.Len <= 0 || e.Len%blk != 0 || i > 0 && d.Extents[i-1].Off+d.Extents[i-1].Len >= e.Off {
			t.Fatalf("diff %s %s: extent %d %+v is not chunk-aligned, sorted, disjoint and merged: %+v", d.From, d.To, i, e, d.Extents)
		}
		for off := e.Off; off < e.Off+e.Len; off += blk {
			out = append(out, int(off/blk))
		}
		sum += e.Len
	}
	if sum != d.Changed {
		t.Fatalf("diff %s %s: changed %d, extents sum to %d", d.From, d.To, d.Changed, sum)
	}
	return out
}

func (e *env) diff(from, to string) wire.SnapshotDiff {
	e.t.Helper()
	d, err := e.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: from, To: to})
	if err != nil {
		e.t.Fatalf("snapshot diff %s %s: %v", from, to, err)
	}
	return d
}

// checkAll compares every diff the model can answer with the daemon's.
func (m *diffModel) checkAll(t *testing.T, e *env, when string) {
	t.Helper()
	for i := range m.snaps {
		for j := i; j <= len(m.snaps); j++ {
			to := cmp.Or(m.origin, "vol")
			if j < len(m.snaps) {
				to = m.snaps[j]
			}
			got := chunksOf(t, e.diff(m.snaps[i], to))
			want := m.changed(i, j)
			for c := range m.uncertain {
				if !slices.Contains(want, c) {
					got = slices.DeleteFunc(got, func(x int) bool { return x == c })
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s: diff %s %s = chunks %v, want %v", when, m.snaps[i], to, got, want)
			}
		}
	}
}

// writeRandom writes n random runs of chunks to vol and records them.
func (m *diffModel) writeRandom(e *env, r *rand.Rand, n, chunks int) {
	for range n {
		c := r.IntN(chunks)
		k := 1 + r.IntN(min(8, chunks-c))
		off := int64(c * blk)
		// Sometimes a write that starts and ends inside chunks.
		lo, hi := int64(0), int64(k*blk)
		if r.IntN(3) == 0 {
			lo = int64(r.IntN(blk))
			hi = max(lo+1, hi-int64(r.IntN(blk)))
		}
		e.write("vol", off+lo, randBytes(r, int(hi-lo)))
		for x := c; x < c+k; x++ {
			m.written[len(m.written)-1][x] = true
		}
	}
}

func (m *diffModel) snap(e *env, name string) {
	e.snap("vol", name)
	m.snaps = append(m.snaps, name)
	m.written = append(m.written, map[int]bool{})
}

// Ensure that for random write patterns with snapshots in between,
// `snapshot diff` between every pair of snapshots, and from each to the
// live origin, is exactly the chunks written in between, at chunk
// granularity, and stays so across a restart of the daemon.
func TestSnapshotDiff_model(t *testing.T) {
	e := newEnv(t)
	const chunks = 256
	e.fileVol("vol", chunks*blk)
	r := rand.New(rand.NewPCG(7, 12))
	m := &diffModel{}
	for g := range 5 {
		m.snap(e, fmt.Sprintf("s%d", g))
		m.writeRandom(e, r, 1+r.IntN(20), chunks)
		m.checkAll(t, e, fmt.Sprintf("generation %d", g))
	}
	e.restart()
	m.checkAll(t, e, "after a restart")
	m.writeRandom(e, r, 10, chunks)
	m.snap(e, "s5")
	m.checkAll(t, e, "after a restart and a new snapshot")
	// A removed snapshot leaves the others' diffs as they were.
	e.must("remove s2", e.c.SnapshotRemove(bg, "s2"))
	m.snaps = slices.Delete(m.snaps, 2, 3)
	m.written[1] = mapUnion(m.written[1], m.written[2])
	m.written = slices.Delete(m.written, 2, 3)
	m.checkAll(t, e, "after removing s2")
	// Renames keep the marks: they are the COWs', and the COWs stay.
	_, err := e.c.Rename(bg, "vol", wire.Rename{NewName: "vol2"})
	e.must("rename vol", err)
	_, err = e.c.Rename(bg, "s4", wire.Rename{NewName: "s4r"})
	e.must("rename s4", err)
	m.origin, m.snaps[slices.Index(m.snaps, "s4")] = "vol2", "s4r"
	m.checkAll(t, e, "after renaming vol and s4")
}

func mapUnion(a, b map[int]bool) map[int]bool {
	out := map[int]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// Ensure that the diffs daxsnap cannot answer exactly are refused with
// the reason, never answered short or full without being asked: the
// wrong order, a snapshot written to directly, a snapshot without a mark
// (taken before tracking), unless --full asks for the whole device.
func TestSnapshotDiff_refusals(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", 64*blk)
	e.snap("vol", "s1")
	e.write("vol", 0, make([]byte, blk))
	e.snap("vol", "s2")
	e.write("vol", 5*blk, make([]byte, blk))

	_, err := e.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: "s2", To: "s1"})
	wantCode(t, err, wire.CodeInvalidArgument, "s2 was taken after s1", "snapshot diff s1 s2")
	_, err = e.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: "vol", To: "s1"})
	wantCode(t, err, wire.CodeInvalidArgument, "vol is not a snapshot")

	// Snapshots made before tracking: no record, so no mark.
	cow1 := e.c
	s1, err := cow1.Snapshot(bg, "s1")
	e.must("show s1", err)
	e.forgetTracking(s1.COW)
	_, err = e.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: "s1", To: "s2"})
	wantCode(t, err, wire.CodeInvalidArgument, "not known", "--full")
	d, err := e.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: "s1", To: "s2", Full: true})
	e.must("diff --full", err)
	if !d.Full || d.Why == "" || len(d.Extents) != 1 || d.Extents[0] != (wire.Extent{Off: 0, Len: 64 * blk}) {
		t.Fatalf("diff --full = %+v, want the whole device, marked full", d)
	}
	// The origin's changes since s1 are its exceptions: always known.
	if got := chunksOf(t, e.diff("s1", "")); !slices.Equal(got, []int{0, 5}) {
		t.Fatalf("diff s1 vol = %v, want [0 5]", got)
	}
	// A new snapshot records s1 now: s1 to s3 is known again.
	e.snap("vol", "s3")
	if got := chunksOf(t, e.diff("s1", "s3")); !slices.Equal(got, []int{0, 5}) {
		t.Fatalf("diff s1 s3 = %v, want [0 5]", got)
	}

	// A write to s2 itself: its own changes cannot be told from the
	// origin's, so pairs with it are refused, before and after a restart.
	if got := chunksOf(t, e.diff("s2", "s3")); !slices.Equal(got, []int{5}) {
		t.Fatalf("diff s2 s3 = %v, want [5]", got)
	}
	e.write("s2", 9*blk, make([]byte, 10))
	for range 2 {
		_, err = e.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: "s2", To: "s3"})
		wantCode(t, err, wire.CodeInvalidArgument, "s2 was written to directly")
		_, err = e.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: "s1", To: "s2", Full: true})
		wantCode(t, err, wire.CodeInvalidArgument, "s2 was written to directly")
		// Against the origin it is still exact: its own write is a difference.
		if got := chunksOf(t, e.diff("s2", "vol")); !slices.Equal(got, []int{5, 9}) {
			t.Fatalf("diff s2 vol = %v, want [5 9]", got)
		}
		e.restart()
	}
}

// Ensure that kill -9 of the daemon, between snapshots with writes in
// flight and in the middle of snapshot create, never makes a diff short
// or full: after each restart every diff between the snapshots the
// daemon has, and from each to the origin, is exactly the chunks written
// in between. A write in flight at the kill may be in the diff or not
// (its exception may be durable while the write itself is not), but one
// that reached the origin always is.
func TestSnapshotDiff_kill9(t *testing.T) {
	const chunks = 256
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	dir := t.TempDir()
	g := &crashRig{t: t, state: filepath.Join(dir, "state"), r: rand.New(rand.NewPCG(seed, 3)), pending: map[int][]byte{}}
	t.Cleanup(func() {
		g.kill()
		if t.Failed() {
			t.Logf("seed %d; daemon logs (last run):\n%s", seed, g.logs)
		}
	})
	g.start()
	img := filepath.Join(dir, "vol.img")
	if err := os.WriteFile(img, make([]byte, chunks*blk), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := g.c.Create(bg, wire.DeviceCreate{Name: "vol", Table: linear(img, chunks*blk/512)}); err != nil {
		t.Fatal(err)
	}
	m := &diffModel{uncertain: map[int]bool{}}
	for it := range 10 {
		name := fmt.Sprintf("s%d", it)
		create := func() error {
			_, err := g.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: name})
			return err
		}
		if g.r.IntN(3) == 0 {
			done := make(chan struct{})
			go func() { defer close(done); create() }()
			time.Sleep(time.Duration(g.r.IntN(20000)) * time.Microsecond)
			g.kill()
			<-done
			g.start()
			if _, err := g.c.Snapshot(bg, name); err == nil {
				m.snaps, m.written = append(m.snaps, name), append(m.written, map[int]bool{})
			}
		} else {
			if err := create(); err != nil {
				t.Fatalf("snapshot create %s: %v", name, err)
			}
			m.snaps, m.written = append(m.snaps, name), append(m.written, map[int]bool{})
		}
		if len(m.snaps) == 0 {
			continue
		}
		last := m.written[len(m.written)-1]
		for range 1 + g.r.IntN(10) {
			c := g.r.IntN(chunks)
			if err := g.c.WriteData(bg, "vol", int64(c*blk), randBytes(g.r, blk)); err != nil {
				t.Fatal(err)
			}
			last[c] = true
		}
		// Writes in flight at the kill: one full chunk each.
		inflight := map[int][]byte{}
		var wg sync.WaitGroup
		for range 1 + g.r.IntN(6) {
			c := g.r.IntN(chunks)
			if _, dup := inflight[c]; dup || last[c] {
				continue
			}
			data := randBytes(g.r, blk)
			inflight[c] = data
			wg.Add(1)
			go func() { defer wg.Done(); g.c.WriteData(bg, "vol", int64(c*blk), data) }()
		}
		time.Sleep(time.Duration(g.r.IntN(5000)) * time.Microsecond)
		g.kill()
		wg.Wait()
		g.start()
		// Settle the writes in flight by the diff to the origin; one
		// whose data reached the origin must be in it.
		d, err := g.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: m.snaps[len(m.snaps)-1]})
		if err != nil {
			t.Fatalf("iteration %d: diff %s vol: %v", it, m.snaps[len(m.snaps)-1], err)
		}
		inDiff := chunksOf(t, d)
		for c, data := range inflight {
			got, err := g.c.ReadData(bg, "vol", int64(c*blk), blk)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case bytes.Equal(got, data) && !slices.Contains(inDiff, c):
				t.Fatalf("iteration %d: a write in flight at the kill reached origin chunk %d, but diff %s vol lacks it: %v", it, c, m.snaps[len(m.snaps)-1], inDiff)
			case bytes.Equal(got, data):
				last[c] = true
			default:
				m.uncertain[c] = true
			}
		}
		e := &env{t: t, c: g.c}
		m.checkAll(t, e, fmt.Sprintf("iteration %d, after kill -9", it))
	}
}

// Ensure that a write to a snapshot without a tracking record (taken
// before tracking) is remembered when a newer snapshot records it, across
// restarts: pairs with it stay refused.
func TestSnapshotDiff_writtenBeforeRecord(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", 64*blk)
	s1 := e.snap("vol", "s1")
	e.forgetTracking(s1.COW)
	e.write("s1", 0, []byte{1})
	e.restart()
	e.snap("vol", "s2")
	for range 2 {
		_, err := e.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: "s1", To: "s2"})
		wantCode(t, err, wire.CodeInvalidArgument, "s1 was written to directly")
		e.restart()
	}
}

// Ensure that diffs stay exact for a snapshot whose COW autoextend grows
// several times under the writes, and for a transient snapshot in the
// daemon that took it (after a restart the daemon serves it as an error
// table, its exceptions gone: refused).
func TestSnapshotDiff_autoextendAndTransient(t *testing.T) {
	e := newEnv(t)
	const chunks = 2048 // 8 MiB
	e.fileVol("vol", chunks*blk)
	r := rand.New(rand.NewPCG(21, 22))
	m := &diffModel{}
	e.snap("vol", "grows", withCOWSize(256<<10), withAutoextend(60, 50))
	m.snaps, m.written = append(m.snaps, "grows"), append(m.written, map[int]bool{})
	m.writeRandom(e, r, 100, chunks)
	e.snap("vol", "t", transient)
	m.snaps, m.written = append(m.snaps, "t"), append(m.written, map[int]bool{})
	m.writeRandom(e, r, 150, chunks)
	m.snap(e, "p")
	m.writeRandom(e, r, 40, chunks)
	if s, err := e.c.Snapshot(bg, "grows"); err != nil || s.State != wire.SnapshotActive || s.Total*512 <= 256<<10 {
		t.Fatalf("grows: %+v, %v: want it active and extended", s, err)
	}
	m.checkAll(t, e, "with autoextend and a transient snapshot")
	e.restart()
	_, err := e.c.SnapshotDiff(bg, wire.SnapshotDiffRequest{From: "t"})
	wantCode(t, err, wire.CodeNoTable, "transient", "contents are gone")
	got := chunksOf(t, e.diff("grows", "p"))
	if want := m.changed(0, 2); !slices.Equal(got, want) {
		t.Fatalf("after a restart: diff grows p = %v, want %v", got, want)
	}
}

// forgetTracking drops, with the daemon stopped, the tracking record of
// the snapshot on COW cow: as a snapshot made before tracking has none.
func (e *env) forgetTracking(cow string) {
	e.t.Helper()
	e.stop()
	st, err := state.Open(e.cfg.StateDir, time.Second)
	e.must("open state", err)
	e.must("forget the tracking of "+cow, st.DeleteTracking(cow))
	e.must("close state", st.Close())
	e.start()
}
