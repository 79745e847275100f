package image_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// crashPoint is both devices as a power loss now would leave them, and
// what the writer knew then.
type crashPoint struct {
	d      devs
	acked  uint64 // Commit of this checkpoint had returned
	issued uint64 // Commit of this checkpoint had been called
}

func (d devs) clone(rng *rand.Rand) devs {
	if rng != nil && rng.IntN(2) == 0 {
		rng = nil // only the flushed writes
	}
	return devs{d.img.CrashClone(rng), d.jnl.CrashClone(rng)}
}

// Ensure that a power loss at any instant while checkpoints are written
// to the journal, committed, applied to the image, or replayed by a
// recovering Open, leaves devices that Open yields as exactly one
// checkpoint's contents, never older than the last whose Commit returned.
func TestPowerLoss(t *testing.T) {
	for _, c := range []struct {
		name  string
		cache int64
	}{{"apply-from-journal", -1}, {"apply-from-memory", 0}} {
		t.Run(c.name, func(t *testing.T) { testPowerLoss(t, c.cache) })
	}
}

func testPowerLoss(t *testing.T, cache int64) {
	want := testutil.CrashIterations(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (DAXSNAP_CRASH_ITER=%d)", seed, want)
	rng := rand.New(rand.NewPCG(seed, 1))
	// The hooks run in the goroutines that write: segments are written
	// in the background, and checkpoints applied.
	var mu sync.Mutex // guards hrng, acked, issued, points
	hrng := rand.New(rand.NewPCG(seed, 2))
	const chunk, nchunks = 4096, 48
	const size = nchunks*chunk - 1024 // a short last chunk
	opt := image.Options{SegmentBytes: 4 * chunk, ApplyCache: cache}
	d := newDevs(size, nchunks*chunk+(nchunks/4+1)*8192+(1<<14))
	// Contents of every checkpoint; 0 is the zeroed image.
	states := [][]byte{make([]byte, size)}
	var acked, issued uint64
	var points []crashPoint
	im, err := image.CreateOn(d.img, d.jnl, size, chunk, opt)
	if err != nil {
		t.Fatal(err)
	}
	hook := func() {
		mu.Lock()
		defer mu.Unlock()
		if hrng.IntN(10) == 0 {
			points = append(points, crashPoint{d.clone(hrng), acked, issued})
		}
	}
	npoints := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(points)
	}
	d.img.SetHook(hook)
	d.jnl.SetHook(hook)
	for seq := uint64(1); npoints() < want; seq++ {
		txn, err := im.Begin(seq)
		if err != nil {
			t.Fatal(err)
		}
		next := bytes.Clone(states[seq-1])
		for range rng.IntN(nchunks) {
			c := rng.Int64N(nchunks)
			p := chunkData(seq, c, min(chunk, size-c*chunk))
			if how := rng.IntN(4); how < 3 { // most without Put's copy, as the engine does
				p = putVia(t, txn, chunk, p, how)
			}
			if err := txn.Put(c, p); err != nil {
				t.Fatal(err)
			}
			copy(next[c*chunk:], p)
		}
		if rng.IntN(8) == 0 {
			txn.Abort()
			seq--
			continue
		}
		states = append(states, next)
		mu.Lock()
		issued = seq
		mu.Unlock()
		if _, err := txn.Commit(time.Unix(int64(seq), 0)); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		acked = seq
		mu.Unlock()
		if rng.IntN(6) == 0 { // a clean reopen now and then
			im.Close()
			if im, err = image.OpenOn(d.img, d.jnl, opt); err != nil {
				t.Fatal(err)
			}
		}
	}
	im.Close()
	d.img.SetHook(nil)
	d.jnl.SetHook(nil)
	t.Logf("%d checkpoints, %d crash images", acked, len(points))
	recoveries := 0
	for i, p := range points {
		// A crash inside the recovery of every fourth image, too.
		if i%4 == 0 {
			r := p.d.clone(nil)
			var inner []devs
			crng := rand.New(rand.NewPCG(seed, uint64(i)))
			var imu sync.Mutex // the recovery writes the image from several goroutines
			h := func() {
				imu.Lock()
				defer imu.Unlock()
				if len(inner) < 3 && crng.IntN(4) == 0 {
					inner = append(inner, r.clone(crng))
				}
			}
			r.img.SetHook(h)
			r.jnl.SetHook(h)
			if im, err := image.OpenOn(r.img, r.jnl, opt); err == nil {
				im.Close()
			}
			for _, c := range inner {
				recoveries++
				if err := checkCrash(c, p, states, opt); err != nil {
					t.Errorf("crash image %d, crashed again in its recovery: %v", i, err)
				}
			}
		}
		if err := checkCrash(p.d, p, states, opt); err != nil {
			t.Errorf("crash image %d of %d: %v", i, len(points), err)
		}
	}
	t.Logf("%d crash images inside recoveries", recoveries)
}

// checkCrash opens the devices of a crash and checks what they hold, then
// opens them again (a second recovery must find the same).
func checkCrash(d devs, p crashPoint, states [][]byte, opt image.Options) error {
	for round := range 2 {
		im, err := image.OpenOn(d.img, d.jnl, opt)
		if err != nil {
			return fmt.Errorf("open (round %d): %w", round, err)
		}
		seq := im.Last().Seq
		if seq < p.acked || seq > p.issued {
			im.Close()
			return fmt.Errorf("open yields checkpoint %d; checkpoint %d was acknowledged and %d issued", seq, p.acked, p.issued)
		}
		got := make([]byte, im.Size())
		_, err = im.ReadAt(got, 0)
		im.Close()
		if err != nil {
			return err
		}
		if !bytes.Equal(got, states[seq]) {
			return fmt.Errorf("open yields checkpoint %d but the image does not hold its contents (%s)", seq, mixOf(got, states))
		}
		// The raw image itself must be the checkpoint, for qemu-img & co.
		// (Before the first checkpoint it may hold part of an interrupted
		// first one, which is written in place: there is nothing yet.)
		raw := make([]byte, len(got))
		d.img.ReadAt(raw, 0)
		if seq > 0 && !bytes.Equal(raw, got) {
			return fmt.Errorf("the raw image after recovery is not checkpoint %d", seq)
		}
	}
	return nil
}

// mixOf says which checkpoint each chunk of got matches.
func mixOf(got []byte, states [][]byte) string {
	var s []string
	for off := 0; off < len(got); off += 4096 {
		end := min(off+4096, len(got))
		m := "?"
		for seq := len(states) - 1; seq >= 0; seq-- {
			if bytes.Equal(got[off:end], states[seq][off:end]) {
				m = strconv.Itoa(seq)
				break
			}
		}
		s = append(s, m)
	}
	return fmt.Sprint("chunks match checkpoints ", s)
}

var _ = storetest.NewCrashDev

// Ensure that a power loss during the first checkpoint, which is written
// straight into the image, leaves no checkpoint or the whole first one,
// and that a first checkpoint begun again after it holds exactly its own
// chunks, none of the interrupted one's.
func TestPowerLossFirst(t *testing.T) {
	want := testutil.CrashIterations(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	const chunk, nchunks = 4096, 32
	const size = nchunks * chunk
	opt := image.Options{SegmentBytes: 4 * chunk}
	checked := 0
	for run := 0; checked < want; run++ {
		d := newDevs(size, image.DataStart) // the first checkpoint needs no journal
		im, err := image.CreateOn(d.img, d.jnl, size, chunk, opt)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex // guards hrng, acked, points
		hrng := rand.New(rand.NewPCG(seed, uint64(run)+10))
		acked := false
		var points []crashPoint
		hook := func() {
			mu.Lock()
			defer mu.Unlock()
			if hrng.IntN(2) == 0 {
				p := crashPoint{d: d.clone(hrng), issued: 1}
				if acked {
					p.acked = 1
				}
				points = append(points, p)
			}
		}
		d.img.SetHook(hook)
		d.jnl.SetHook(hook)
		first := make([]byte, size)
		txn, err := im.Begin(1)
		if err != nil {
			t.Fatal(err)
		}
		for c := int64(run % 2); c < nchunks; c += 1 + int64(run%2) {
			p := chunkData(1, c, chunk)
			copy(first[c*chunk:], p)
			if c%3 != 0 {
				p = putVia(t, txn, chunk, p, int(c%3))
			}
			if err := txn.Put(c, p); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := txn.Commit(time.Unix(1, 0)); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		acked = true
		mu.Unlock()
		im.Close()
		d.img.SetHook(nil)
		d.jnl.SetHook(nil)
		states := [][]byte{make([]byte, size), first}
		for i, p := range points {
			checked++
			if err := checkCrash(p.d, p, states, opt); err != nil {
				t.Fatalf("run %d, crash image %d: %v", run, i, err)
			}
			im, err := image.OpenOn(p.d.img, p.d.jnl, opt)
			if err != nil {
				t.Fatal(err)
			}
			if im.Last().Seq == 1 {
				im.Close()
				continue
			}
			// Begin the first checkpoint again, with other chunks.
			again := make([]byte, size)
			txn, err := im.Begin(1)
			if err != nil {
				t.Fatal(err)
			}
			for c := int64(rng.IntN(3)); c < nchunks; c += 3 {
				q := chunkData(2, c, chunk)
				copy(again[c*chunk:], q)
				if err := txn.Put(c, q); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := txn.Commit(time.Unix(2, 0)); err != nil {
				t.Fatal(err)
			}
			im.Close()
			raw := make([]byte, size)
			p.d.img.ReadAt(raw, 0)
			if !bytes.Equal(raw, again) {
				t.Fatalf("run %d, crash image %d: a first checkpoint begun again after a crash does not hold exactly its chunks (%s)",
					run, i, mixOf(raw, [][]byte{make([]byte, size), first, again}))
			}
		}
	}
	t.Logf("%d crash images", checked)
}
