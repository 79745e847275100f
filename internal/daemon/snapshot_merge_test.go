package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/wire"
)

const blk = 4096

// blockWrite is the last write a writer made to a block.
type blockWrite struct {
	data       []byte
	start, end time.Time
}

// writers write random blocks of a device through the API, each writer
// owning the blocks ≡ its index mod n, reading every write back, until
// stopped. They record the last write to each block.
type writers struct {
	e    *env
	dev  string
	mu   sync.Mutex
	last map[int64]blockWrite
	stop chan struct{}
	wg   sync.WaitGroup
	errs chan error
	n    int
	// changed lists writes that did not read back as written.
	changed []readBack
	starts  []time.Time
	// inflight counts the writes and read-backs under way.
	inflight atomic.Int32
}

// startedSince counts the writes that began after a and have ended.
func (w *writers) startedSince(a time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.between(a, time.Now().Add(time.Hour))
}

// between counts the writes that began in (a, b).
func (w *writers) between(a, b time.Time) int {
	n := 0
	for _, s := range w.starts {
		if s.After(a) && s.Before(b) {
			n++
		}
	}
	return n
}

type readBack struct {
	block int64
	start time.Time
	got   []byte
}

func startWriters(e *env, dev string, size int64, n int, seed uint64) *writers {
	w := &writers{e: e, dev: dev, last: map[int64]blockWrite{}, stop: make(chan struct{}), errs: make(chan error, n), n: n}
	blocks := size / blk
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			for {
				select {
				case <-w.stop:
					return
				default:
				}
				b := r.Int64N(blocks/int64(n))*int64(n) + int64(i)
				p := randBytes(r, blk)
				start := time.Now()
				w.inflight.Add(1)
				err := e.c.WriteData(bg, dev, b*blk, p)
				w.inflight.Add(-1)
				if err != nil {
					w.errs <- fmt.Errorf("write block %d of %s: %w", b, dev, err)
					return
				}
				end := time.Now()
				w.mu.Lock()
				w.last[b] = blockWrite{data: p, start: start, end: end}
				w.starts = append(w.starts, start)
				w.mu.Unlock()
				w.inflight.Add(1)
				got, err := e.c.ReadData(bg, dev, b*blk, blk)
				w.inflight.Add(-1)
				if err != nil {
					w.errs <- fmt.Errorf("read back block %d of %s: %w", b, dev, err)
					return
				}
				if !bytes.Equal(got, p) {
					// Only a merge that began between the write and the
					// read explains this: checkMerged judges it.
					w.mu.Lock()
					w.changed = append(w.changed, readBack{block: b, start: start, got: got})
					w.mu.Unlock()
				}
			}
		}()
	}
	return w
}

func (w *writers) finish(t *testing.T) map[int64]blockWrite {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	select {
	case err := <-w.errs:
		t.Fatal(err)
	default:
	}
	return w.last
}

// checkMerged checks the origin after a merge that took effect somewhere
// in [t0, t1] under concurrent writers: a block last written after t1
// holds that write, one last written before t0 (or never) holds the
// snapshot's data, one written across the switch either.
func checkMerged(t *testing.T, got, img []byte, w *writers, t0, t1 time.Time) {
	t.Helper()
	for _, rb := range w.changed {
		if !rb.start.Before(t1) || !bytes.Equal(rb.got, img[rb.block*blk:(rb.block+1)*blk]) {
			t.Fatalf("block %d read back neither as written nor as the snapshot's data the merge brought back (write began %v after the merge call returned)",
				rb.block, rb.start.Sub(t1))
		}
	}
	last := w.last
	after, before := 0, 0
	for b := int64(0); b < int64(len(img))/blk; b++ {
		g, s := got[b*blk:(b+1)*blk], img[b*blk:(b+1)*blk]
		w, written := last[b]
		switch {
		case !written || w.end.Before(t0):
			if !bytes.Equal(g, s) {
				t.Fatalf("block %d: want the snapshot's data (last written %v before the merge began)", b, written)
			}
			before++
		case w.start.After(t1):
			if !bytes.Equal(g, w.data) {
				t.Fatalf("block %d: want its last write, made after the merge began", b)
			}
			after++
		default:
			if !bytes.Equal(g, s) && !bytes.Equal(g, w.data) {
				t.Fatalf("block %d: neither the snapshot's data nor its last write", b)
			}
		}
	}
	if after == 0 {
		t.Fatalf("no write landed after the merge began: the test proves nothing (%d before)", before)
	}
}

// Ensure that a merge runs while writers keep writing the origin: for a
// file-backed origin online (the writers never wait), for a DAX origin
// offline (they wait while it is suspended). Afterwards the origin holds
// the snapshot's data overlaid with the writes made since the merge
// began, another snapshot still holds its own time, the devices are as
// before the first snapshot, and a DAX origin kept its capabilities.
func TestSnapshot_mergeConcurrentWriters(t *testing.T) {
	for _, dax := range []bool{false, true} {
		t.Run(fmt.Sprintf("dax=%v", dax), func(t *testing.T) {
			e := newEnv(t)
			if dax {
				e.pmemVol("vol", volSize)
			} else {
				e.fileVol("vol", volSize)
			}
			caps := e.info("vol")
			r := rand.New(rand.NewPCG(11, 12))
			img := randBytes(r, volSize)
			e.write("vol", 0, img)
			e.snap("vol", "s1")
			for range 300 { // exceptions for the merge to copy back
				e.write("vol", r.Int64N(volSize/blk)*blk, randBytes(r, 512))
			}
			cur := e.read("vol", 0, volSize)
			e.snap("vol", "s2", withChunk(16384))

			w := startWriters(e, "vol", volSize, 4, 99)
			// The merge finishes only once writers met it, however slowly
			// they run: online, a write began after the merge started and
			// ended; offline (DAX), the origin is suspended, so an I/O
			// under way then waits across the merge.
			var t1 time.Time
			started := make(chan struct{})
			release := sync.OnceFunc(func() { close(started) })
			defer release() // a failing test must not leave the finish held
			var waited atomic.Int32
			reset := e.setFailStep(func(step string) error {
				if step != "finish-merge" {
					return nil
				}
				<-started
				for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Millisecond) {
					if n := w.inflight.Load(); dax && n > 0 {
						waited.Store(n)
						return nil
					}
					if !dax && w.startedSince(t1) > 0 {
						return nil
					}
					if time.Now().After(deadline) {
						return errors.New("test: no writer met the merge in 2 minutes")
					}
				}
			})
			defer reset()
			t0 := time.Now()
			s, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{NoWait: true})
			t1 = time.Now()
			if err != nil || s.Merge == nil || s.Merge.Offline != dax {
				t.Fatalf("merge --no-wait: %+v, %v", s, err)
			}
			if dax {
				wantCode(t, e.c.Resume(bg, "vol"), wire.CodeBusy, "stays suspended", "merges into it offline")
			}
			release()
			s, err = e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
			tDone := time.Now()
			if err != nil || s.State != wire.SnapshotMerged {
				t.Fatalf("merge (wait): %+v, %v", s, err)
			}
			// Let writes land after the merge too, however slowly they run.
			for deadline := time.Now().Add(2 * time.Minute); w.startedSince(tDone) < 4; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("writers made no writes in 2 minutes after the merge")
				}
			}
			w.finish(t)
			if dax {
				t.Logf("%d writer I/Os waited across the offline merge (%v)", waited.Load(), tDone.Sub(t1))
			} else {
				t.Logf("%d writes began while the merge ran for %v", w.between(t1, tDone), tDone.Sub(t1))
			}
			checkMerged(t, e.read("vol", 0, volSize), img, w, t0, t1)
			t.Logf("%d writes read back the snapshot's data because the merge began between write and read", len(w.changed))
			e.wantData("s2", cur)
			e.wantDevices("vol", "vol-real", "s2")
			if l := e.snapList("vol"); len(l) != 1 || l[0].Name != "s2" {
				t.Fatalf("list: %+v", l)
			}
			if in := e.info("vol"); in.Capabilities != caps.Capabilities || in.FixedCaps != caps.FixedCaps || in.Suspended {
				t.Fatalf("vol after merge: %+v, before %+v", in, caps)
			}
			if f := e.cowFiles(); strings.Join(f, " ") != "s2.cow" {
				t.Fatalf("COW files: %v", f)
			}
		})
	}
}

// Ensure that a DAX origin keeps its capabilities through snapshot
// create, remove and an offline merge, and that while it merges offline
// it stays suspended and refuses resume; a merge whose finish failed is
// finished by `snapshot merge` again.
func TestSnapshot_daxKeepsDAX(t *testing.T) {
	e := newEnv(t)
	e.pmemVol("vol", volSize)
	before := e.info("vol")
	if !strings.Contains(before.Capabilities, "dax") || !strings.Contains(before.FixedCaps, "dax") {
		t.Fatalf("a tmpfs-backed volume is not DAX here: %+v", before)
	}
	r := rand.New(rand.NewPCG(7, 7))
	img := randBytes(r, volSize)
	e.write("vol", 0, img)
	e.snap("vol", "s1")
	if in := e.info("vol"); in.Capabilities != before.Capabilities || in.FixedCaps != before.FixedCaps {
		t.Fatalf("capabilities after snapshot create: %q (fixed %q), before %q (fixed %q)", in.Capabilities, in.FixedCaps, before.Capabilities, before.FixedCaps)
	}
	e.write("vol", 0, randBytes(r, volSize))

	reset := e.setFailStep(func(s string) error {
		if s == "finish-merge" {
			return errors.New("injected finish failure")
		}
		return nil
	})
	_, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
	reset()
	if err == nil || !strings.Contains(err.Error(), "injected finish failure") {
		t.Fatalf("merge with a failing finish: %v", err)
	}
	in := e.info("vol")
	if !in.Suspended || in.Capabilities != before.Capabilities {
		t.Fatalf("vol with the merge unfinished: %+v", in)
	}
	s, err := e.c.Snapshot(bg, "s1")
	if err != nil || s.State != wire.SnapshotMerging || s.Merge == nil || !s.Merge.Offline || s.Merge.Device != "vol-merge" ||
		s.Merge.Remaining != 0 || !strings.Contains(s.Merge.Error, "injected") {
		t.Fatalf("s1 with the merge unfinished: %+v %+v", s, s.Merge)
	}
	wantCode(t, e.c.Resume(bg, "vol"), wire.CodeBusy, "vol stays suspended", "snapshot list vol")
	wantCode(t, e.c.Remove(bg, "vol-merge", wire.Remove{}), wire.CodeBusy, "merging a snapshot into vol offline")
	wantCode(t, e.c.SnapshotRemove(bg, "s1"), wire.CodeBusy, "s1 is merging into vol")
	_, err = e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "s2"})
	wantCode(t, err, wire.CodeBusy, "merging into vol", "wait for the merge")

	s, err = e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
	if err != nil || s.State != wire.SnapshotMerged {
		t.Fatalf("merge again: %+v, %v", s, err)
	}
	in = e.info("vol")
	if in.Suspended || in.Capabilities != before.Capabilities || in.FixedCaps != before.FixedCaps {
		t.Fatalf("vol after the merge: %+v, before %+v", in, before)
	}
	e.wantDevices("vol")
	e.wantData("vol", img)
}

// Ensure that a merge cut short by a daemon restart continues after it
// (the merge table comes back and resumes merging) and finishes; for a
// DAX origin, the origin comes back suspended until then.
func TestSnapshot_mergeAcrossRestart(t *testing.T) {
	for _, dax := range []bool{false, true} {
		t.Run(fmt.Sprintf("dax=%v", dax), func(t *testing.T) {
			e := newEnv(t)
			if dax {
				e.pmemVol("vol", volSize)
			} else {
				e.fileVol("vol", volSize)
			}
			r := rand.New(rand.NewPCG(21, 22))
			img := randBytes(r, volSize)
			e.write("vol", 0, img)
			e.snap("vol", "s1")
			e.snap("vol", "s2")
			for b := range int64(volSize / blk) { // one exception per chunk, in random order
				if r.IntN(2) == 0 {
					e.write("vol", b*blk, randBytes(r, 512))
				}
			}
			// The finish fails in the first daemon, so that the restart
			// always finds the merge in progress (a finish that waited
			// would hold the stop up), and waits in the next one until
			// the checks below have seen it in progress: a failed finish
			// is not tried again, and a job let go at once may be done
			// before they look.
			reset := e.setFailStep(func(s string) error {
				if s == "finish-merge" {
					return errors.New("held")
				}
				return nil
			})
			defer reset()
			s, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{NoWait: true})
			if err != nil || s.State != wire.SnapshotMerging {
				t.Fatalf("merge --no-wait: %+v, %v", s, err)
			}
			e.stop()
			held := make(chan struct{})
			release := sync.OnceFunc(func() { close(held) })
			defer release() // a failing test must not leave the finish held
			e.setFailStep(func(s string) error {
				if s == "finish-merge" {
					<-held
				}
				return nil
			})
			e.start()
			s, err = e.c.Snapshot(bg, "s1")
			if err != nil || s.State != wire.SnapshotMerging || s.Merge == nil || s.Merge.Offline != dax {
				t.Fatalf("s1 after restart: %+v, %v", s, err)
			}
			if in := e.info("vol"); in.Suspended != dax {
				t.Fatalf("vol after restart: %+v", in)
			}
			release()
			e.waitGone("s1", "vol") // the daemon's own job finished it
			e.wantData("vol", img)
			e.wantData("s2", img)
			if in := e.info("vol"); in.Suspended {
				t.Fatalf("vol after merge: %+v", in)
			}
			e.must("remove s2", e.c.SnapshotRemove(bg, "s2"))
			e.wantData("vol", img)
		})
	}
}

// Ensure that waiting on a merge that has already finished (a client that
// started it with --no-wait) reports it finished, and when, also after a
// restart; a new device that takes the name ends that.
func TestSnapshot_mergeWaitAfterFinish(t *testing.T) {
	for _, dax := range []bool{false, true} {
		t.Run(fmt.Sprintf("dax=%v", dax), func(t *testing.T) {
			e := newEnv(t)
			path := ""
			if dax {
				path = e.pmemVol("vol", volSize)
			} else {
				path = e.fileVol("vol", volSize)
			}
			r := rand.New(rand.NewPCG(21, 22))
			img := randBytes(r, volSize)
			e.write("vol", 0, img)
			e.snap("vol", "s1")
			e.write("vol", 0, randBytes(r, volSize))
			before := time.Now()
			if _, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{NoWait: true}); err != nil {
				t.Fatalf("merge --no-wait: %v", err)
			}
			e.waitGone("s1", "vol")
			after := time.Now()
			for _, req := range []wire.SnapshotMerge{{}, {NoWait: true}} {
				s, err := e.c.SnapshotMerge(bg, "s1", req)
				if err != nil || s.State != wire.SnapshotMerged || s.Origin != "vol" ||
					s.MergedAt.Before(before.Add(-time.Second)) || s.MergedAt.After(after.Add(time.Second)) {
					t.Fatalf("snapshot merge s1 %+v after the merge finished: %+v, %v; want merged into vol between %v and %v", req, s, err, before, after)
				}
			}
			e.restart()
			if s, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{}); err != nil || s.State != wire.SnapshotMerged || s.MergedAt.IsZero() {
				t.Fatalf("snapshot merge s1 after a restart: %+v, %v", s, err)
			}
			e.wantData("vol", img)

			// A device called s1 again: the old merge says nothing about it.
			e.create("s1", linear(path, 8))
			e.must("remove s1", e.c.Remove(bg, "s1", wire.Remove{}))
			_, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
			wantCode(t, err, wire.CodeNotFound, "no snapshot called s1")
		})
	}
}

// Ensure that resume of an origin that merges offline is refused at once
// even while the merge's finish holds the origin's lock: before, the
// resume waited for the finish, and a finish waiting for that resume (as
// TestSnapshot_mergeConcurrentWriters' did under load) never ended.
func TestSnapshot_resumeRefusedDuringOfflineMergeFinish(t *testing.T) {
	e := newEnv(t)
	e.pmemVol("vol", volSize)
	r := rand.New(rand.NewPCG(5, 6))
	e.write("vol", 0, randBytes(r, volSize))
	e.snap("vol", "s1")
	e.write("vol", 0, randBytes(r, 64*blk))
	entered, held := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(held) })
	defer release() // the finish must not stay held after a failure
	reset := e.setFailStep(func(step string) error {
		if step == "finish-merge" {
			close(entered)
			<-held
		}
		return nil
	})
	defer reset()
	if _, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{NoWait: true}); err != nil {
		t.Fatalf("merge --no-wait: %v", err)
	}
	select {
	case <-entered:
	case <-time.After(2 * time.Minute):
		t.Fatal("the merge did not reach its finish in 2 minutes")
	}
	resumed := make(chan error, 1)
	go func() { resumed <- e.c.Resume(bg, "vol") }()
	select {
	case err := <-resumed:
		wantCode(t, err, wire.CodeBusy, "stays suspended", "merges into it offline")
	case <-time.After(30 * time.Second):
		release()
		t.Fatalf("resume waited 30 s for the finish of the merge instead of being refused; after the finish: %v", <-resumed)
	}
}
