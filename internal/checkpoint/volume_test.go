package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
)

// pauser pauses a checkpoint's write-back after a given number of Puts,
// until released (AfterPut hook).
type pauser struct {
	at      atomic.Int64 // pause after this many Puts (0: never)
	paused  chan struct{}
	resume  chan struct{}
	stopped chan struct{}
}

func newPauser() *pauser {
	return &pauser{paused: make(chan struct{}), resume: make(chan struct{}), stopped: make(chan struct{})}
}

func (p *pauser) hook(_ uint64, written int64) {
	if p.at.CompareAndSwap(written, 0) {
		select {
		case p.paused <- struct{}{}:
			select {
			case <-p.resume:
			case <-p.stopped:
			}
		case <-p.stopped:
		}
	}
}

// pausable is a rig of 16 chunks of 16 KiB whose checkpoints p pauses.
func pausable(t *testing.T, cfg checkpoint.Config) (*rig, *pauser, *checkpoint.Volume) {
	requireShm(t)
	r := newRig(t, 256<<10, 16<<10, t.TempDir())
	p := newPauser()
	v := r.start(cfg, checkpoint.Hooks{AfterPut: p.hook})
	t.Cleanup(func() { close(p.stopped) }) // before v.Close
	return r, p, v
}

// expect fails unless the image is want.
func (r *rig) expect(want []byte, what string) {
	r.t.Helper()
	if d := diff(r.image(), want, r.chunk); d != "" {
		r.t.Fatalf("%s: %s", what, d)
	}
}

type result struct {
	cp  image.Checkpoint
	err error
}

func goCheckpoint(v *checkpoint.Volume) chan result {
	done := make(chan result, 1)
	go func() {
		cp, err := v.Checkpoint(bg)
		done <- result{cp, err}
	}()
	return done
}

// stress runs 4 writers (2 with block writes, 2 with direct stores) at
// random places while it takes checkpoints, one after the other, until
// enough(rounds, status), a mismatch or 1000 rounds; each checkpoint's
// image is compared with the memory copied at its cut. It returns the
// mismatches.
func stress(t *testing.T, cfg checkpoint.Config, skipSave bool, enough func(int, checkpoint.Status) bool) ([]string, checkpoint.Status) {
	const size, chunk = 1 << 20, 16 << 10
	r := newRig(t, size, chunk, t.TempDir())
	var mu sync.Mutex
	cuts := map[uint64][]byte{}
	var ncut uint64
	v := r.start(cfg, checkpoint.Hooks{
		SkipSave: skipSave,
		// The memory stands still at the cut: what the checkpoint must hold.
		AtCut: func() {
			mu.Lock()
			ncut++
			cuts[ncut] = slices.Clone(r.mem)
			mu.Unlock()
		},
		// Widen the window in which writers meet the write-back.
		AfterPut: func(uint64, int64) { time.Sleep(20 * time.Microsecond) },
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := rng.Int64N(size)
				p := fill(int(min(rng.Int64N(2*chunk)+1, size-off)), w*1000000+i)
				var err error
				if w%2 == 0 {
					_, err = r.dev.WriteAt(p, off)
				} else {
					err = r.maps.store(r.dev, r.mem, off, p)
				}
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	var bad []string
	for round := 1; round <= 1000; round++ {
		cp, err := v.Checkpoint(bg)
		if err != nil {
			t.Fatalf("checkpoint: %v", err)
		}
		mu.Lock()
		want := cuts[cp.Seq]
		delete(cuts, cp.Seq)
		mu.Unlock()
		if d := diff(r.image(), want, chunk); d != "" {
			bad = append(bad, fmt.Sprintf("checkpoint %d: %s", cp.Seq, d))
		}
		if st := v.Status(); len(bad) > 0 || enough(round, st) || t.Failed() {
			return bad, st
		}
	}
	return bad, v.Status()
}

// TestStress checks, under -race, that checkpoints taken while 4 writers
// write continuously (block writes and direct stores) each hold exactly
// their cut, and that writers did meet the write-back (chunks saved).
func TestStress(t *testing.T) {
	requireShm(t)
	bad, st := stress(t, checkpoint.Config{}, false, func(round int, st checkpoint.Status) bool {
		return round >= 20 && st.BufferedChunks > 0
	})
	if len(bad) > 0 {
		t.Fatalf("after %d checkpoints: %s", st.Checkpoints, bad[0])
	}
	if st.BufferedChunks == 0 {
		t.Fatalf("in %d checkpoints no writer met the write-back: the test did not test the copy-on-write", st.Checkpoints)
	}
	t.Logf("%d checkpoints, %d chunks saved by writers, buffer peak %d of %d, %d backpressure waits",
		st.Checkpoints, st.BufferedChunks, st.BufferPeak, st.BufferCap, st.BackpressureWaits)
}

// TestStress_catchesSkippedSave checks that the stress test catches an
// engine that lets writers change chunks before they are written back.
func TestStress_catchesSkippedSave(t *testing.T) {
	requireShm(t)
	bad, _ := stress(t, checkpoint.Config{}, true, func(int, checkpoint.Status) bool { return false })
	if len(bad) == 0 {
		t.Fatal("1000 checkpoints of an engine that skips the copy-on-write all matched their cut: the stress test cannot catch it")
	}
	t.Logf("caught: %s", bad[0])
}

// TestStress_tinyBuffer is the stress test with a buffer of one chunk:
// writers wait for room (backpressure) and the checkpoints stay exact.
func TestStress_tinyBuffer(t *testing.T) {
	requireShm(t)
	bad, st := stress(t, checkpoint.Config{BufferBytes: 1}, false, func(round int, st checkpoint.Status) bool {
		return round >= 20 && st.BackpressureWaits > 0
	})
	if len(bad) > 0 {
		t.Fatalf("after %d checkpoints: %s", st.Checkpoints, bad[0])
	}
	if st.BackpressureWaits == 0 || st.BufferCap != 16<<10 || st.BufferPeak > st.BufferCap {
		t.Fatalf("buffer cap %d (want one chunk), peak %d, %d backpressure waits (want some)", st.BufferCap, st.BufferPeak, st.BackpressureWaits)
	}
}

// TestBackpressure checks that with a full buffer a writer of a chunk
// not yet written back waits (and is counted) instead of overrunning the
// cap, and that the checkpoint still holds the cut.
func TestBackpressure(t *testing.T) {
	r, p, v := pausable(t, checkpoint.Config{BufferBytes: 16 << 10}) // one chunk
	size, chunk := r.size, r.chunk
	for c := range int64(size / chunk) {
		r.write(c*chunk, fill(int(chunk), int(c)))
	}
	want := slices.Clone(r.mem)
	p.at.Store(1)
	done := goCheckpoint(v)
	<-p.paused // chunk 0 is written back, 1..15 are not
	var writers sync.WaitGroup
	for i, c := range []int64{5, 9, 13} {
		writers.Add(1)
		go func() {
			defer writers.Done()
			if i%2 == 0 {
				_, err := r.dev.WriteAt(fill(100, 100+i), c*chunk+10)
				if err != nil {
					t.Error(err)
				}
			} else if err := r.maps.store(r.dev, r.mem, c*chunk+10, fill(100, 100+i)); err != nil {
				t.Error(err)
			}
		}()
	}
	// One writer fills the buffer, the others must wait for room.
	waitFor(t, "a writer waiting for room", func() bool {
		st := v.Status()
		return st.BackpressureWaits >= 1 && st.BufferUsed == chunk
	})
	if st := v.Status(); st.BufferUsed > st.BufferCap {
		t.Fatalf("buffer holds %d bytes, over its cap %d", st.BufferUsed, st.BufferCap)
	}
	p.resume <- struct{}{}
	writers.Wait()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	r.expect(want, "the checkpoint is not its cut")
	st := v.Status()
	if st.BufferPeak > chunk || st.BufferUsed != 0 {
		t.Fatalf("buffer peak %d (cap %d), %d bytes used after the checkpoint; want at most the cap, then 0", st.BufferPeak, chunk, st.BufferUsed)
	}
	// The waited writes are in the next checkpoint.
	now := slices.Clone(r.mem)
	if _, err := v.Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	r.expect(now, "the next checkpoint lacks the writes that waited")
}

// TestPersist_groupCommit checks that concurrent Persist calls share one
// checkpoint, that a Persist with nothing written since a checkpoint under
// way shares that one, and that a Persist with nothing written since the
// last complete one takes none; each returns with its writes durable.
func TestPersist_groupCommit(t *testing.T) {
	r, p, v := pausable(t, checkpoint.Config{})
	chunk := r.chunk
	r.write(0, fill(4096, 1))
	p.at.Store(1)
	first := goCheckpoint(v)
	<-p.paused
	// Written after the first cut: the Persists need the next checkpoint.
	r.store(3*chunk, fill(4096, 2))
	want := slices.Clone(r.mem)
	const n = 16
	errs := make(chan error, n)
	for range n {
		go func() { errs <- v.Persist(bg) }()
	}
	waitFor(t, "16 Persist calls waiting", func() bool { return v.Status().Waiting == n })
	p.resume <- struct{}{}
	if res := <-first; res.err != nil {
		t.Fatal(res.err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := v.Status(); st.Checkpoints != 2 {
		t.Fatalf("%d concurrent Persist calls took %d checkpoints besides the first, want 1 shared", n, st.Checkpoints-1)
	}
	r.expect(want, "after Persist the image lacks a store made before it")
	// Nothing written since: no checkpoint.
	if err := v.Persist(bg); err != nil {
		t.Fatal(err)
	}
	if st := v.Status(); st.Checkpoints != 2 || !st.Clean {
		t.Fatalf("Persist of a clean volume: %d checkpoints, clean %v; want 2, true", st.Checkpoints, st.Clean)
	}
	// Written, then a checkpoint under way: Persist shares it.
	r.write(5*chunk, fill(4096, 3))
	want = slices.Clone(r.mem)
	p.at.Store(1)
	third := goCheckpoint(v)
	<-p.paused
	persisted := make(chan error, 1)
	go func() { persisted <- v.Persist(bg) }()
	select {
	case err := <-persisted:
		t.Fatalf("Persist returned (%v) before the checkpoint under way was durable", err)
	case <-time.After(20 * time.Millisecond):
	}
	p.resume <- struct{}{}
	if res := <-third; res.err != nil {
		t.Fatal(res.err)
	}
	if err := <-persisted; err != nil {
		t.Fatal(err)
	}
	if st := v.Status(); st.Checkpoints != 3 {
		t.Fatalf("Persist during a checkpoint with nothing written since its cut took its own: %d checkpoints, want 3", st.Checkpoints)
	}
	r.expect(want, "after Persist the image lacks a write made before it")
}

// TestClose_duringCheckpoint checks that Close waits for the checkpoint
// under way (it completes, durable), fails the request waiting for the
// next one, refuses later ones, and detaches tracking.
func TestClose_duringCheckpoint(t *testing.T) {
	r, p, v := pausable(t, checkpoint.Config{Interval: time.Hour})
	chunk := r.chunk
	r.write(0, fill(8192, 1))
	want := slices.Clone(r.mem)
	p.at.Store(1)
	first := goCheckpoint(v)
	<-p.paused
	r.write(chunk, fill(100, 2))
	second := goCheckpoint(v)
	waitFor(t, "the second request to wait", func() bool { return v.Status().Waiting == 1 })
	closed := make(chan error, 1)
	go func() { closed <- v.Close() }()
	canceled, cancel := context.WithCancel(bg)
	cancel()
	waitFor(t, "Close to refuse requests", func() bool {
		return errors.Is(v.Persist(canceled), checkpoint.ErrClosed)
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a checkpoint was being written back", err)
	default:
	}
	p.resume <- struct{}{}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if last := r.im.Last().Seq; last != 1 {
		t.Fatalf("after Close the image is at checkpoint %d, want the one under way, 1", last)
	}
	if res := <-first; res.err != nil || res.cp.Seq != 1 {
		t.Fatalf("the checkpoint under way: %+v, want checkpoint 1", res)
	}
	r.expect(want, "checkpoint 1 is not its cut")
	if res := <-second; !errors.Is(res.err, checkpoint.ErrClosed) {
		t.Fatalf("the request waiting for the next checkpoint: %v, want ErrClosed", res.err)
	}
	if _, err := v.Checkpoint(bg); !errors.Is(err, checkpoint.ErrClosed) {
		t.Fatalf("Checkpoint after Close: %v, want ErrClosed", err)
	}
	if g := r.dev.WriteGranularity(0, chunk); g != 0 {
		t.Fatalf("after Close the device still tracks writes (WriteGranularity %d)", g)
	}
	r.write(2*chunk, fill(100, 3))
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// failing is an image device whose writes from byte 64 KiB on fail
// while fail is set, as appends do on a full disk (the journal's header,
// rewritten in place below that, still takes writes).
type failing struct {
	*storetest.CrashDev
	fail atomic.Bool
}

func (f *failing) WriteAt(p []byte, off int64) (int, error) {
	if f.fail.Load() && off+int64(len(p)) > 64<<10 {
		return 0, fmt.Errorf("write %s: %w", f.Path(), syscall.ENOSPC)
	}
	return f.CrashDev.WriteAt(p, off)
}

// TestFailedCheckpoint checks that a checkpoint the image cannot take
// (a full disk) fails alone: writers go on, the previous checkpoint stays
// the image, Status says why, and the next checkpoint writes the failed
// one's chunks too (they are dirty again).
func TestFailedCheckpoint(t *testing.T) {
	requireShm(t)
	const size, chunk = 256 << 10, 16 << 10
	r := newRig(t, size, chunk, t.TempDir())
	r.im.Close()
	img := &failing{CrashDev: storetest.NewCrashDev("img", size)}
	jnl := &failing{CrashDev: storetest.NewCrashDev("jnl", 4<<20)}
	var err error
	if r.im, err = image.CreateOn(img, jnl, size, chunk, image.Options{SegmentBytes: 2 * chunk}); err != nil {
		t.Fatal(err)
	}
	v := r.start(checkpoint.Config{}, checkpoint.Hooks{})
	r.write(0, fill(3*chunk, 1))
	if _, err := v.Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	first := slices.Clone(r.mem)
	r.write(chunk, fill(2*chunk, 2)) // chunks 1, 2
	r.store(7*chunk+5, fill(10, 3))  // chunk 7
	jnl.fail.Store(true)
	if _, err := v.Checkpoint(bg); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("checkpoint on a full disk: %v, want ENOSPC", err)
	}
	st := v.Status()
	if st.Failures != 1 || !errors.Is(st.LastError, syscall.ENOSPC) || st.Last.Seq != 1 || st.InProgress || st.BufferUsed != 0 {
		t.Fatalf("status after the failure: %+v; want 1 failure with its error, last checkpoint 1, nothing in progress or buffered", st)
	}
	r.expect(first, "after a failed checkpoint the image is not the one before")
	r.write(9*chunk, fill(100, 4)) // the volume goes on
	jnl.fail.Store(false)
	cp, err := v.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Seq != 2 || cp.Chunks != 4 {
		t.Fatalf("checkpoint after the failure: %+v; want checkpoint 2 of 4 chunks (1, 2, 7 again, and 9)", cp)
	}
	r.expect(slices.Clone(r.mem), "the checkpoint after a failed one lacks its chunks")
	if st := v.Status(); st.LastError != nil || !st.Clean {
		t.Fatalf("status after recovering: last error %v, clean %v", st.LastError, st.Clean)
	}
}

// TestFirstCheckpoint checks that the first checkpoint after Start writes
// every chunk that is not zero (nothing was tracked before Start; a new
// image reads as zeroes), the second only what was written since, and a
// third what MarkDirty marked.
func TestFirstCheckpoint(t *testing.T) {
	requireShm(t)
	const size, chunk = 256 << 10, 16 << 10
	r := newRig(t, size, chunk, t.TempDir())
	r.write(2*chunk, fill(10, 1)) // before Start: not seen by tracking
	r.write(5*chunk, fill(chunk, 2))
	v := r.start(checkpoint.Config{}, checkpoint.Hooks{})
	if st := v.Status(); st.DirtyChunks != size/chunk || st.Clean {
		t.Fatalf("after Start: %d dirty chunks, clean %v; want all %d, false", st.DirtyChunks, st.Clean, size/chunk)
	}
	cp, err := v.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Chunks != 2 {
		t.Fatalf("first checkpoint wrote %d chunks, want the 2 that are not zero", cp.Chunks)
	}
	r.expect(slices.Clone(r.mem), "first checkpoint")
	r.write(2*chunk, make([]byte, 10)) // zeroes again: written all the same
	r.store(9*chunk, fill(10, 3))
	if cp, err = v.Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	if cp.Chunks != 2 {
		t.Fatalf("second checkpoint wrote %d chunks, want the 2 written since the first", cp.Chunks)
	}
	r.expect(slices.Clone(r.mem), "second checkpoint")
	// A change behind the device's back is written once marked.
	copy(r.mem[11*chunk+3:], fill(5, 4))
	v.MarkDirty(11*chunk, 8)
	v.MarkDirty(-5, 1)         // outside the volume: nothing
	v.MarkDirty(size-1, chunk) // the last chunk, clipped
	if cp, err = v.Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	if cp.Chunks != 2 {
		t.Fatalf("checkpoint after MarkDirty wrote %d chunks, want the 2 marked", cp.Chunks)
	}
	r.expect(slices.Clone(r.mem), "checkpoint after MarkDirty")
}

// TestInterval checks that the interval takes checkpoints of a volume
// written since the last one, and none of a volume with nothing written.
func TestInterval(t *testing.T) {
	requireShm(t)
	const size, chunk = 256 << 10, 16 << 10
	r := newRig(t, size, chunk, t.TempDir())
	v := r.start(checkpoint.Config{Interval: 5 * time.Millisecond}, checkpoint.Hooks{})
	r.write(0, fill(100, 1))
	waitFor(t, "a checkpoint on the interval", func() bool { st := v.Status(); return st.Checkpoints >= 1 && st.Clean })
	r.store(4*chunk, fill(100, 2))
	want := slices.Clone(r.mem)
	waitFor(t, "a checkpoint of the store", func() bool { return v.Status().Checkpoints >= 2 && v.Status().Clean })
	r.expect(want, "the interval's checkpoint")
	n := v.Status().Checkpoints
	time.Sleep(50 * time.Millisecond) // ten intervals
	if st := v.Status(); st.Checkpoints != n {
		t.Fatalf("the interval took %d checkpoints of a volume with nothing written", st.Checkpoints-n)
	}
}

// TestInSync checks that a volume started in sync with its image (just
// restored from it) has its first checkpoint write only what was written
// after Start, and that Start refuses an image of another size.
func TestInSync(t *testing.T) {
	requireShm(t)
	const size, chunk = 256 << 10, 16 << 10
	r := newRig(t, size, chunk, t.TempDir())
	v := r.start(checkpoint.Config{InSync: true}, checkpoint.Hooks{})
	if st := v.Status(); !st.Clean || st.DirtyChunks != 0 {
		t.Fatalf("in sync after Start: clean %v, %d dirty chunks; want clean, none", st.Clean, st.DirtyChunks)
	}
	r.write(6*chunk, fill(chunk, 1))
	cp, err := v.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Chunks != 1 {
		t.Fatalf("first checkpoint in sync wrote %d chunks, want 1", cp.Chunks)
	}
	r.expect(slices.Clone(r.mem), "first checkpoint in sync")
	small, err := image.Create(t.TempDir()+"/small.img", size/2, chunk, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if _, err := checkpoint.Start(checkpoint.Config{Device: r.dev, Image: small}); err == nil {
		t.Fatal("Start took an image of half the volume's size")
	}
}

// TestSnapshotOrigin checkpoints a volume that has a snapshot (its table
// a snapshot-origin, as `snapshot create` makes it): the checkpoints'
// cuts (suspend and resume of the origin) leave the snapshot as it was,
// stores both copy out for the snapshot and are tracked, and each
// checkpoint is the volume.
func TestSnapshotOrigin(t *testing.T) {
	requireShm(t)
	const size, chunk = 256 << 10, 16 << 10
	r := newRig(t, size, chunk, t.TempDir())
	cow := filepath.Join(filepath.Dir(r.path), "cow")
	if err := os.WriteFile(cow, make([]byte, size*2), 0o600); err != nil {
		t.Fatal(err)
	}
	r.write(0, fill(int(size), 1))
	// As LVM does: the origin's table over the memory, the snapshot, both live.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.dev.Load(fmt.Sprintf("0 %d snapshot-origin %s\n", size/512, r.path)))
	must(r.dev.Suspend(dm.SuspendOptions{}))
	snap, err := r.m.Create("snap", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot %s %s N 16\n", size/512, r.path, cow)})
	must(err)
	t.Cleanup(func() { r.m.Remove("snap", dm.RemoveOptions{}) })
	must(r.dev.Resume())
	atSnap := slices.Clone(r.mem)
	v := r.start(checkpoint.Config{}, checkpoint.Hooks{})
	for i := range 3 {
		r.write(int64(i)*3*chunk+100, fill(5000, 10+i))
		r.store(int64(i)*5*chunk+7, fill(300, 20+i))
		if _, err := v.Checkpoint(bg); err != nil {
			t.Fatal(err)
		}
		r.expect(slices.Clone(r.mem), fmt.Sprintf("checkpoint %d of a volume with a snapshot", i+1))
		got := make([]byte, size)
		if _, err := snap.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if d := diff(got, atSnap, chunk); d != "" {
			t.Fatalf("after checkpoint %d the snapshot changed: %s", i+1, d)
		}
	}
}
