package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i/512)
	}
	return p
}

func TestSnapshot_ctorErrors(t *testing.T) {
	w := newWorld(t, 0)
	for _, tc := range []struct{ table, want string }{
		{"0 512 snapshot orig cow0 P", "want at least 4 arguments <origin> <COW device> <P|PO|N> <chunk size>, got 3"},
		{"0 512 snapshot orig cow0 X 8", `invalid store type "X": want P (persistent), PO (persistent, overflow aware) or N (transient)`},
		{"0 512 snapshot orig cow0 P x", `invalid chunk size: "x" is not a sector number`},
		{"0 512 snapshot orig cow0 P 7", "chunk size"},
		{"0 512 snapshot orig cow0 N 0", "chunk size not set"},
		{"0 512 snapshot orig orig P 8", "COW device cannot be the same as origin device"},
		{"0 512 snapshot orig cow0 P 8 1 bogus", `unrecognised feature requested: "bogus"`},
		{"0 512 snapshot orig cow0 P 8 1 discard_passdown_origin", "discard_passdown_origin feature depends on discard_zeroes_cow"},
		{"0 512 snapshot orig cow0 P 8 2 discard_zeroes_cow", "2 feature arguments announced, 1 given"},
		{"0 512 snapshot orig cow0 P 8 3 a b c", `invalid number of feature arguments "3"`},
		{"0 1024 snapshot orig cow0 P 8", "too small for sectors 0..1024"},
		{"0 512 snapshot orig nocow P 8", "cannot get COW device: open nocow"},
		{"0 512 snapshot-merge orig cow0 N 8", "snapshot-merge needs a persistent store (P)"},
		{"0 512 snapshot-origin", "want 1 argument <origin>, got 0"},
	} {
		_, err := w.m.Create("bad", dm.CreateOptions{Table: tc.table})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, dm.ErrInvalidTable) {
			t.Errorf("%q: %v, want invalid table containing %q", tc.table, err, tc.want)
		}
	}
	// A COW device with a damaged header refuses to load, and the origin is unaffected.
	copy(w.cows[1].Bytes(), "junk")
	if _, err := w.m.Create("bad", dm.CreateOptions{Table: w.snapTable(1, "P")}); err == nil || !strings.Contains(err.Error(), `is not 0x70416e53 ("SnAp")`) {
		t.Errorf("corrupt COW: %v", err)
	}
	if _, err := w.vol.WriteAt([]byte("fine"), 0); err != nil {
		t.Fatalf("origin after refused snapshot: %v", err)
	}
}

func TestSnapshot_statusAndTable(t *testing.T) {
	w := newWorld(t, 0)
	s0 := w.takeSnapshot(0, "P")
	if got, want := status(t, s0), "0 512 snapshot 16/1024 16"; got != want {
		t.Fatalf("fresh status %q, want %q", got, want)
	}
	_, err := w.vol.WriteAt(pattern(3*4096, 1), 4096) // chunks 1..3
	must(t, err)
	if got, want := status(t, s0), "0 512 snapshot 40/1024 16"; got != want {
		t.Fatalf("after 3 copies: %q, want %q", got, want)
	}
	if tab, _ := s0.Table(dm.Live); tab != "0 512 snapshot orig cow0 P 8\n" {
		t.Fatalf("table %q", tab)
	}
	if tab, _ := w.vol.Table(dm.Live); tab != "0 512 snapshot-origin orig\n" {
		t.Fatalf("origin table %q", tab)
	}
	if st, _ := w.vol.Status(dm.Live); st != "0 512 snapshot-origin \n" {
		t.Fatalf("origin status %q", st)
	}
	s1, err := w.m.Create("s1", dm.CreateOptions{Table: "0 512 snapshot orig cow1 po 8 2 discard_zeroes_cow discard_passdown_origin"})
	must(t, err)
	if tab, _ := s1.Table(dm.Live); tab != "0 512 snapshot orig cow1 PO 8 2 discard_zeroes_cow discard_passdown_origin\n" {
		t.Fatalf("table %q", tab)
	}
	if got := status(t, w.m.List()[1]); !strings.HasPrefix(got, "0 512 snapshot ") {
		t.Fatalf("status %q", got)
	}
}

// TestSnapshot_groupCommit: one origin write over many chunks commits
// them in far fewer metadata flushes than chunks.
func TestSnapshot_groupCommit(t *testing.T) {
	w := newWorld(t, 0)
	w.takeSnapshot(0, "P")
	before := w.cows[0].Flushes.Load()
	_, err := w.vol.WriteAt(pattern(32*4096, 7), 0)
	must(t, err)
	flushes := w.cows[0].Flushes.Load() - before
	if flushes == 0 || flushes > 2 {
		t.Fatalf("32 chunk copies took %d COW flushes; want one batch: a flush before and after its metadata write", flushes)
	}
	t.Logf("32 copies, %d flushes", flushes)
}

func TestSnapshot_fullCOWInvalidates(t *testing.T) {
	// cow0 of 8 chunks: header, one area, 6 data chunks.
	small := newWorldWith(t, 8*4096)
	s0, s1 := small.takeSnapshot(0, "P"), small.takeSnapshot(1, "P")
	ev := s0.Info().EventNr
	img := bytes.Clone(small.orig.Bytes())
	_, err := small.vol.WriteAt(pattern(10*4096, 3), 0)
	must(t, err) // the origin never sees the snapshot's trouble
	if got := status(t, s0); got != "0 512 snapshot Invalid" {
		t.Fatalf("s0 status %q, want Invalid", got)
	}
	if s0.Info().EventNr == ev {
		t.Fatal("no device event on invalidation")
	}
	if _, err := s0.ReadAt(make([]byte, 512), 0); !errors.Is(err, dm.ErrIO) {
		t.Fatalf("read of invalid snapshot: %v, want EIO", err)
	}
	// A flush still succeeds, as in the kernel (REQ_PREFLUSH is remapped to
	// the COW before validity is checked): suspend and shutdown flush it.
	if err := s0.Flush(); err != nil {
		t.Fatalf("flush of an invalid snapshot: %v", err)
	}
	if !bytes.Equal(small.orig.Bytes()[:10*4096], pattern(10*4096, 3)) {
		t.Fatal("origin write lost")
	}
	// The other snapshot (big COW) is intact.
	if got := read(t, s1, 0, originBytes); !bytes.Equal(got, img) {
		t.Fatal("invalidating s0 harmed s1")
	}
	// The header records it: reactivation comes back Invalid.
	must(t, small.m.Remove("s0", dm.RemoveOptions{}))
	d, err := small.m.Create("s0", dm.CreateOptions{Table: small.snapTable(0, "P")})
	must(t, err)
	if got := status(t, d); got != "0 512 snapshot Invalid" {
		t.Fatalf("reloaded invalid snapshot status %q", got)
	}
}

func TestSnapshot_overflow(t *testing.T) {
	small := newWorldWith(t, 8*4096)
	s0 := small.takeSnapshot(0, "PO")
	for c := range 6 {
		_, err := s0.WriteAt(pattern(4096, byte(c)), int64(c)*4096)
		must(t, err)
	}
	_, err := s0.WriteAt([]byte("x"), 6*4096)
	if !errors.Is(err, dm.ErrNoSpace) {
		t.Fatalf("write to full PO snapshot: %v, want ENOSPC", err)
	}
	if got := status(t, s0); got != "0 512 snapshot Overflow" {
		t.Fatalf("status %q, want Overflow", got)
	}
	// Reads work; writes to chunks it already has still work.
	if got := read(t, s0, 4096, 4096); !bytes.Equal(got, pattern(4096, 1)) {
		t.Fatal("overflowed snapshot reads wrong data")
	}
	_, err = s0.WriteAt([]byte("ok"), 100)
	must(t, err)
	// Without O the same condition invalidates.
	small2 := newWorldWith(t, 8*4096)
	s := small2.takeSnapshot(0, "P")
	for c := range 7 {
		_, err = s.WriteAt(pattern(4096, byte(c)), int64(c)*4096)
	}
	if !errors.Is(err, dm.ErrIO) || status(t, s) != "0 512 snapshot Invalid" {
		t.Fatalf("full P snapshot write: %v, status %q", err, status(t, s))
	}
}

func TestSnapshot_merge(t *testing.T) {
	w := newWorld(t, 0)
	initial := pattern(originBytes, 9)
	_, err := w.vol.WriteAt(initial, 0)
	must(t, err)
	s0 := w.takeSnapshot(0, "P")
	// s0 diverges: its own writes, and origin writes after it.
	_, err = s0.WriteAt(pattern(5*4096, 50), 10*4096)
	must(t, err)
	want := read(t, s0, 0, originBytes)
	_, err = w.vol.WriteAt(pattern(20*4096, 80), 30*4096)
	must(t, err)
	s1 := w.takeSnapshot(1, "P") // another snapshot must keep its view through the merge
	s1want := read(t, s1, 0, originBytes)
	// Merge s0 back: the origin device switches to snapshot-merge.
	must(t, w.vol.Load(fmt.Sprintf("0 %d snapshot-merge orig cow0 P 8", sectors)))
	must(t, w.vol.Resume())
	// I/O during the merge sees the snapshot's contents.
	if got := read(t, w.vol, 0, originBytes); !bytes.Equal(got, want) {
		t.Fatal("merging device does not read as the snapshot")
	}
	_, err = w.vol.WriteAt(pattern(4096, 200), 12*4096)
	must(t, err)
	copy(want[12*4096:], pattern(4096, 200))
	st := waitMerged(t, w.vol)
	if !strings.HasSuffix(st, " 16/1024 16") {
		t.Fatalf("merged status %q", st)
	}
	if !bytes.Equal(w.orig.Bytes(), want) {
		t.Fatal("origin after merge differs from the snapshot")
	}
	if got := read(t, s1, 0, originBytes); !bytes.Equal(got, s1want) {
		t.Fatal("merge changed another snapshot's view")
	}
	if _, err := s0.ReadAt(make([]byte, 512), 0); !errors.Is(err, dm.ErrIO) {
		t.Fatalf("read of the handed-over snapshot: %v, want EIO", err)
	}
	// Done: back to snapshot-origin, drop the merged snapshot.
	must(t, w.vol.Load(fmt.Sprintf("0 %d snapshot-origin orig", sectors)))
	must(t, w.vol.Resume())
	must(t, w.m.Remove("s0", dm.RemoveOptions{}))
	if got := read(t, w.vol, 0, originBytes); !bytes.Equal(got, want) {
		t.Fatal("origin after the merge table was replaced")
	}
}

// TestSnapshot_concurrentReadsAndCopyOut: snapshot readers race origin
// writers; every snapshot read must return the frozen image, never data
// written after the snapshot (the conflicting-read rule), under -race.
func TestSnapshot_concurrentReadsAndCopyOut(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	w := newWorld(t, 0)
	_, err := w.vol.WriteAt(pattern(originBytes, 1), 0)
	must(t, err)
	frozen := bytes.Clone(w.orig.Bytes())
	snaps := []*dm.Device{w.takeSnapshot(0, "P"), w.takeSnapshot(1, "N")}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(g)))
			for range 300 {
				off := rng.Int64N(originBytes - 8192)
				n := 1 + rng.Int64N(8192)
				if g < 3 {
					p := make([]byte, n)
					for i := range p {
						p[i] = 0xEE
					}
					if _, err := w.vol.WriteAt(p, off); err != nil {
						errs <- err
						return
					}
					continue
				}
				s := snaps[g%2]
				p := make([]byte, n)
				if _, err := s.ReadAt(p, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, frozen[off:off+n]) {
					errs <- fmt.Errorf("%s read %d+%d returned data written after the snapshot", s.Name(), off, n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, s := range snaps {
		if got := read(t, s, 0, originBytes); !bytes.Equal(got, frozen) {
			t.Fatalf("%s differs from the frozen image", s.Name())
		}
	}
}

func TestSnapshot_discard(t *testing.T) {
	w := newWorld(t, 0)
	_, err := w.vol.WriteAt(pattern(originBytes, 4), 0)
	must(t, err)
	plain := w.takeSnapshot(0, "P")
	if err := plain.Discard(0, 4096); !errors.Is(err, dm.ErrNotSupported) {
		t.Fatalf("discard without discard_zeroes_cow: %v", err)
	}
	clear(w.cows[1].Bytes()[:4096])
	d, err := w.m.Create("dz", dm.CreateOptions{Table: "0 512 snapshot orig cow1 P 8 1 discard_zeroes_cow"})
	must(t, err)
	_, err = d.WriteAt([]byte("remapped"), 4096)
	must(t, err)
	must(t, d.Discard(0, 3*4096))
	if got := read(t, d, 4096, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("discard of a remapped chunk did not zero it")
	}
	if got := read(t, d, 0, 4096); !bytes.Equal(got, pattern(4096, 4)) {
		t.Fatal("discard of an unmapped chunk changed it")
	}
	clear(w.cows[2].Bytes()[:4096])
	pd, err := w.m.Create("pd", dm.CreateOptions{Table: "0 512 snapshot orig cow2 P 8 2 discard_zeroes_cow discard_passdown_origin"})
	must(t, err)
	must(t, pd.Discard(8*4096, 4096))
	if !bytes.Equal(w.orig.Bytes()[8*4096:9*4096], make([]byte, 4096)) {
		t.Fatal("discard_passdown_origin did not discard the origin")
	}
}

func TestOrigin_capabilities(t *testing.T) {
	for _, tc := range []struct {
		caps backing.Capability
		dax  bool
	}{{backing.DAX | backing.WPFault, true}, {backing.DAX | backing.Sync, false}, {0, false}} {
		w := newWorld(t, tc.caps)
		if got := w.vol.Info().LiveCaps.Has(backing.DAX); got != tc.dax {
			t.Errorf("snapshot-origin over %v: dax %v, want %v", tc.caps, got, tc.dax)
		}
	}
	// A live DAX device without wpfault cannot become snapshot-origin.
	w := newWorld(t, backing.DAX|backing.Sync)
	d, err := w.m.Create("lin", dm.CreateOptions{Table: "0 512 linear orig 0"})
	must(t, err)
	err = d.Load("0 512 snapshot-origin orig")
	if !errors.Is(err, dm.ErrDAXChange) || !strings.Contains(err.Error(), "snapshot-origin cannot catch direct writes to orig") {
		t.Fatalf("load snapshot-origin over sync pmem: %v", err)
	}
}

// hugeMem is memory with 2 MiB mapping pages, as a hugetlbfs region.
type hugeMem struct{ *backingtest.Mem }

func (hugeMem) MapFile() (uintptr, int64) { return ^uintptr(0), 0 }
func (hugeMem) PageSize() int64           { return 2 << 20 }

// A snapshot of hugetlbfs-like memory needs chunks of at least one page:
// write faults are caught, and copied, a whole page at a time.
func TestSnapshot_chunkSmallerThanPage(t *testing.T) {
	orig := hugeMem{backingtest.NewMem("huge", 4<<20, backing.DAX|backing.WPFault)}
	cow := backingtest.NewMem("cow", 16<<20, 0)
	reg := dm.NewRegistry()
	all.Register(reg)
	m := dm.NewManager(reg, dm.NewDevicePool(func(name string, _ backing.Options) (backing.Device, error) {
		switch name {
		case "huge":
			return orig, nil
		case "cow":
			return cow, nil
		}
		return nil, fmt.Errorf("open %s: no such file or directory", name)
	}))
	_, err := m.Create("s", dm.CreateOptions{Table: "0 8192 snapshot huge cow P 8"})
	if err == nil || !strings.Contains(err.Error(), "chunk size 8 sectors (4096 bytes) is smaller than the 2097152-byte pages of huge (a tmpfs file): direct-access write faults copy whole pages; use a chunk size of at least 4096 sectors") {
		t.Fatalf("4 KiB chunks over 2 MiB pages: %v", err)
	}
	clear(cow.Bytes()[:1<<20])
	if _, err := m.Create("s", dm.CreateOptions{Table: "0 8192 snapshot huge cow P 4096"}); err != nil {
		t.Fatalf("2 MiB chunks over 2 MiB pages: %v", err)
	}
}

// recordInvalidations counts the invalidations that snapshots opened from
// now on report.
func recordInvalidations(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	old := slog.Default()
	// Not old.Handler(): the default one writes through package log, which
	// SetDefault points back at slog (a deadlock).
	slog.SetDefault(slog.New(countingHandler{Handler: slog.NewTextHandler(os.Stderr, nil), msg: "invalidating snapshot", n: &n}))
	t.Cleanup(func() { slog.SetDefault(old) })
	return &n
}

type countingHandler struct {
	slog.Handler
	msg string
	n   *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{Handler: h.Handler.WithAttrs(as), msg: h.msg, n: h.n}
}

// Ensure that removing a snapshot while origin writes copy out into it
// lets those copies finish before its store closes: a removed snapshot is
// never invalidated (and logged as such) by a copy that found it just
// before its removal.
func TestSnapshot_removeDuringCopyOut(t *testing.T) {
	invalidated := recordInvalidations(t)
	w := newWorld(t, 0)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			p := pattern(4096, byte(g))
			for !stop.Load() {
				if _, err := w.vol.WriteAt(p, rng.Int64N(originBytes/4096)*4096); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 40 {
		w.takeSnapshot(i%2, "N")
		time.Sleep(time.Millisecond)
		must(t, w.m.Remove(fmt.Sprintf("s%d", i%2), dm.RemoveOptions{}))
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := invalidated.Load(); n != 0 {
		t.Fatalf("%d snapshots invalidated while being removed", n)
	}
}

// TestSnapshot_writeHook: the write hook is told of the first write to a
// snapshot itself, before it happens, and only of that one: origin
// writes (copy-out) never call it, a failing hook fails the write with
// EIO and leaves the snapshot as it was, and once a call succeeds later
// writes skip it.
func TestSnapshot_writeHook(t *testing.T) {
	w := newWorld(t, 0)
	_, err := w.vol.WriteAt(pattern(originBytes, 5), 0)
	must(t, err)
	d := w.takeSnapshot(0, "P")
	var calls []string
	fail := errors.New("state file not writable")
	snapshot.SetWriteHook(w.m, func(cow string) error {
		calls = append(calls, cow)
		return fail
	})
	t.Cleanup(func() { snapshot.SetWriteHook(w.m, nil) })
	_, err = w.vol.WriteAt([]byte("origin"), 0)
	must(t, err)
	if len(calls) != 0 {
		t.Fatalf("an origin write called the write hook: %q", calls)
	}
	if _, err := d.WriteAt([]byte("lost"), 4096); !errors.Is(err, dm.ErrIO) || !strings.Contains(err.Error(), fail.Error()) {
		t.Fatalf("write with a failing hook: %v, want EIO saying why", err)
	}
	if got := read(t, d, 4096, 4); !bytes.Equal(got, pattern(8192, 5)[4096:4100]) {
		t.Fatalf("the refused write changed the snapshot: % x", got)
	}
	fail = nil
	for range 2 {
		_, err = d.WriteAt([]byte("kept"), 4096)
		must(t, err)
	}
	if len(calls) != 2 || calls[0] != "cow0" {
		t.Fatalf("hook calls %q: want cow0 twice (the failed write, then the first that succeeded)", calls)
	}
}
