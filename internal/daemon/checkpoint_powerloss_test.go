package daemon_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// plDevs is a checkpoint image and its journal on crash devices.
type plDevs struct {
	img *storetest.CrashDev
	jnl image.Dev // the CrashDev jnlCrash, or a broken variant over it
	// jnlCrash is the journal's crash device.
	jnlCrash *storetest.CrashDev
}

// crash is what a power loss now could leave of d: the flushed writes,
// and (rng not nil) a random torn subset of the others. The journal is
// cloned first: the image's writes that follow it in time are those of
// the checkpoint it records as being applied, which a recovery applies
// again.
func (d plDevs) crash(rng *rand.Rand) plDevs {
	if rng != nil && rng.IntN(2) == 0 {
		rng = nil // only the flushed writes
	}
	jnl := d.jnlCrash.CrashClone(rng)
	return plDevs{img: d.img.CrashClone(rng), jnl: jnl, jnlCrash: jnl}
}

// opener is d as the daemon's Config.CheckpointDevs: existing journals.
func (d plDevs) opener(path, journal string) (image.Dev, image.Dev, bool, error) {
	return d.img, d.jnl, true, nil
}

// restore opens d as a restore at start opens it, and returns the
// checkpoint it yields and its contents.
func (d plDevs) restore() (uint64, []byte, error) {
	return daemon.RestoreImage(d.opener, "/crash/vol.img", "/crash/vol.img.journal")
}

// crashImage is a power loss: the devices it leaves, and the newest
// checkpoint reported complete before it.
type crashImage struct {
	d     plDevs
	acked uint64
}

// plResult is what the restore of a crash image yielded.
type plResult struct {
	image      int // its number, in the order taken
	seq, acked uint64
	sum        [32]byte
}

// keptImage is a crash image as it was taken, and what its restore
// yielded.
type keptImage struct {
	d plDevs
	r plResult
}

// powerLoss runs the power-loss harness: a memory volume that writers
// processes write causal logs to through their mappings, checkpointed by
// the daemon on demand into crash devices (wrapJournal, if not nil,
// stands between the daemon and the journal's), cloned before every
// write and flush until want crash images are checked (or, stopEarly,
// until the first problem). It returns the problems found, and how many crash
// images and checkpoints it checked.
func powerLoss(t *testing.T, want int, wrapJournal func(*storetest.CrashDev) image.Dev, stopEarly bool) (problems []string, images, checkpoints, restarts int) {
	testutil.RequireRoot(t) // userfaultfd on other processes' memory
	const (
		size    = 512 << 10
		writers = 4
		// The journal holds one checkpoint of at most the whole volume:
		// two header slots, a segment descriptor and the data.
		journalBytes = size + 64<<10
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d crash images", seed, want)
	primary := plDevs{img: storetest.NewCrashDev("vol.img", size), jnlCrash: storetest.NewCrashDev("vol.img.journal", journalBytes)}
	primary.jnl = primary.jnlCrash
	if wrapJournal != nil {
		primary.jnl = wrapJournal(primary.jnlCrash)
	}
	var omu sync.Mutex // guards served, made
	served, made := primary, false
	e := newEnvWith(t, func(cfg *daemon.Config) {
		cfg.CheckpointDevs = func(path, journal string) (image.Dev, image.Dev, bool, error) {
			omu.Lock()
			defer omu.Unlock()
			exists := made
			made = true
			return served.img, served.jnl, exists, nil
		}
	})
	region := e.pmemVol("vol", size)
	e.enableCheckpoints("vol", t.TempDir(), 0) // only the test takes checkpoints

	var (
		pmu      sync.Mutex // guards problems
		acked    atomic.Uint64
		checked  atomic.Int64
		mu       sync.Mutex // guards hrng, taking, crashes' closing
		hrng     = rand.New(rand.NewPCG(seed, 1))
		taking   = true
		crashes  = make(chan crashImage, 4)
		results  []plResult
		ahead    *keptImage // kept for a restore by the daemon at its start
		first    *keptImage
		finished = make(chan struct{})
	)
	problem := func(format string, a ...any) {
		pmu.Lock()
		defer pmu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, a...))
		}
	}
	nproblems := func() int {
		pmu.Lock()
		defer pmu.Unlock()
		return len(problems)
	}
	// The hook runs at the start of every write and flush of either
	// device, before it takes effect: in the write-back's segment
	// writes, at the commit record, and in the apply that follows. Each
	// is a power loss: which of the writes not flushed yet survive, and
	// how torn, is random.
	hook := func() {
		mu.Lock()
		defer mu.Unlock()
		if taking {
			crashes <- crashImage{primary.crash(hrng), acked.Load()} // waits while the checker is behind
		}
	}
	// The checker restores each crash image as it comes.
	go func() {
		defer close(finished)
		i := 0
		verdicts := map[[32]byte]error{} // CheckCausal of each contents seen
		for c := range crashes {
			i++
			fresh := c.d.crash(nil) // c.d as it is now: the restore recovers c.d
			seq, data, err := c.d.restore()
			switch {
			case err != nil:
				problem("crash image %d (checkpoint %d reported complete): the restore fails: %v", i, c.acked, err)
			case seq < c.acked:
				problem("crash image %d: the restore yields checkpoint %d, older than %d, reported complete before the power loss", i, seq, c.acked)
			case seq > c.acked+1:
				problem("crash image %d: the restore yields checkpoint %d, but only %d was begun", i, seq, c.acked+1)
			default:
				// Equal contents are one cut: each is checked once.
				sum := sha256.Sum256(data)
				if _, ok := verdicts[sum]; !ok {
					_, verdicts[sum] = clienttest.CheckCausal(data, writers)
				}
				if err := verdicts[sum]; err != nil {
					problem("crash image %d: the restore yields checkpoint %d, which is not a consistent cut: %v", i, seq, err)
				}
				results = append(results, plResult{image: i, seq: seq, acked: c.acked, sum: sum})
				// The daemon restores two of them at its start (below):
				// the first that yields a checkpoint, and the first that
				// yields one not yet reported complete when the power went.
				k := &keptImage{d: fresh, r: results[len(results)-1]}
				if seq > c.acked && ahead == nil {
					ahead = k
				}
				if seq > 0 && first == nil {
					first = k
				}
			}
			checked.Add(1)
		}
	}()

	var kids []*clienttest.Child
	for w := range writers {
		c := clienttest.Start(t, e.d.SessionSocketPath())
		c.Do("map vol 0 %d rw", size)
		c.Do("causal %d %d", w, writers)
		kids = append(kids, c)
	}
	waitProgress(t, func() []byte { return e.read("vol", 0, size) }, make([]uint64, writers))

	// The contents of each checkpoint, as a recovery from only the
	// flushed writes after its report finds them: checkpoint 0 (none
	// yet) reads as zeroes.
	refs := map[uint64][32]byte{0: sha256.Sum256(make([]byte, size))}
	primary.img.SetHook(hook)
	primary.jnlCrash.SetHook(hook)
	var stopOnce sync.Once
	stopTaking := func() {
		stopOnce.Do(func() {
			mu.Lock()
			taking = false
			close(crashes)
			mu.Unlock()
			<-finished
			primary.img.SetHook(nil)
			primary.jnlCrash.SetHook(nil)
		})
	}
	defer stopTaking() // also when the test fails early
	// Generous: a crash image takes about 0.4 s on a loaded 2-core
	// machine with -race, so DAXSNAP_CRASH_ITER=1000 wants some 7 minutes.
	limit := max(5*time.Minute, time.Duration(want)*2*time.Second)
	deadline := time.Now().Add(limit)
	for checked.Load() < int64(want) && !(stopEarly && nproblems() > 0) {
		if time.Now().After(deadline) {
			t.Fatalf("%v for %d checkpoints gave only %d of %d crash images", limit, len(refs)-1, checked.Load(), want)
		}
		// Every store made before the request is in the checkpoint.
		before := progress(e.read("vol", 0, size), writers)
		cp := e.checkpoint("vol")
		if cp.Seq != acked.Load()+1 {
			t.Fatalf("checkpoint %d reported after %d: the test alone takes them, one at a time", cp.Seq, acked.Load())
		}
		acked.Store(cp.Seq)
		seq, data, err := primary.crash(nil).restore()
		if err != nil || seq != cp.Seq {
			problem("checkpoint %d, reported complete: a restore of its flushed writes yields checkpoint %d (err %v)", cp.Seq, seq, err)
			continue
		}
		last, err := clienttest.CheckCausal(data, writers)
		if err != nil {
			problem("checkpoint %d is not a consistent cut: %v", cp.Seq, err)
		}
		for w := range before {
			if err == nil && last[w] < before[w] {
				problem("checkpoint %d ends writer %d at record %d, but it had completed %d before the checkpoint was asked for", cp.Seq, w, last[w], before[w])
			}
		}
		refs[cp.Seq] = sha256.Sum256(data)
	}
	stopTaking()
	for _, c := range kids {
		c.Do("stop")
		c.Do("unmap")
		c.Do("quit")
	}
	// Every restore yields exactly one checkpoint's contents.
	for _, r := range results {
		if ref, ok := refs[r.seq]; !ok {
			problem("crash image %d: the restore yields checkpoint %d, which was never reported complete", r.image, r.seq)
		} else if ref != r.sum {
			problem("crash image %d: the restore yields checkpoint %d (checkpoint %d reported complete), but not its contents: a mix of checkpoints", r.image, r.seq, r.acked)
		}
	}
	// The daemon itself restores crash images at its start, the volume's
	// memory gone as after a reboot.
	for _, k := range []*keptImage{first, ahead} {
		if k == nil || stopEarly && len(problems) > 0 {
			continue
		}
		e.stop()
		if err := os.Remove(region); err != nil {
			t.Fatal(err)
		}
		omu.Lock()
		served = k.d
		omu.Unlock()
		e.start()
		in := e.info("vol")
		got := e.read("vol", 0, size)
		if du := in.Durability; du == nil || du.Restored == nil {
			problem("crash image %d: the daemon's start did not restore checkpoint %d, as restoring the image found: note %q, durability %+v", k.r.image, k.r.seq, in.Note, du)
		} else if du.Restored.Seq != k.r.seq {
			problem("crash image %d: the daemon's start restored checkpoint %d, but restoring the image found %d", k.r.image, du.Restored.Seq, k.r.seq)
		} else if sha256.Sum256(got) != k.r.sum {
			problem("crash image %d: the daemon's start restored checkpoint %d, but the volume does not hold its contents", k.r.image, k.r.seq)
		}
		restarts++
	}
	return problems, int(checked.Load()), len(refs) - 1, restarts
}

// Ensure that a power loss at any instant while the daemon checkpoints a
// memory volume that 4 processes write causal logs to through their
// mappings (during the write-back of a checkpoint's chunks into the
// journal, its commit record, or the apply into the image that follows)
// leaves devices that restore, opened as a restore at start opens them,
// to exactly one checkpoint's contents: a consistent cut (prefix-closed
// for the causal checker), holding every store made before it was asked
// for, and never older than the newest checkpoint reported complete
// before the power went. The devices are storetest crash devices: a
// clone keeps the flushed writes, and half the time a random torn subset
// of the others. 200 crash images, or DAXSNAP_CRASH_ITER.
func TestCheckpoint_powerLoss(t *testing.T) {
	start := time.Now()
	problems, images, checkpoints, restarts := powerLoss(t, testutil.CrashIterations(t), nil, false)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d crash images of %d checkpoints checked in %v, %d of them restored by the daemon's start too", images, checkpoints, time.Since(start).Round(time.Millisecond), restarts)
}

// lateJournal is a broken journal device: each segment write (past the
// header slots) reaches the device only at the flush after the one
// issued after it, so the commit record that follows it is durable
// first, as if the image wrote its commit record before flushing the
// journal. Reads see every write at once, so the daemon notices nothing.
type lateJournal struct {
	*storetest.CrashDev
	mu        sync.Mutex
	due, held []lateWrite // held: since the last flush; due: before it
}

// journalHeaders is where a journal's segments start, after its two
// 4096-byte header slots (internal/checkpoint/image/format.go).
const journalHeaders = 2 * 4096

type lateWrite struct {
	off int64
	p   []byte
}

func (j *lateJournal) WriteAt(p []byte, off int64) (int, error) {
	if off < journalHeaders {
		return j.CrashDev.WriteAt(p, off)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.held = append(j.held, lateWrite{off, bytes.Clone(p)})
	return len(p), nil
}

func (j *lateJournal) ReadAt(p []byte, off int64) (int, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	n, err := j.CrashDev.ReadAt(p, off)
	for _, w := range append(j.due[:len(j.due):len(j.due)], j.held...) {
		from, to := max(off, w.off), min(off+int64(len(p)), w.off+int64(len(w.p)))
		if from < to {
			copy(p[from-off:to-off], w.p[from-w.off:])
		}
	}
	return n, err
}

func (j *lateJournal) Flush() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, w := range j.due {
		if _, err := j.CrashDev.WriteAt(w.p, w.off); err != nil {
			return err
		}
	}
	j.due, j.held = j.held, nil
	return j.CrashDev.Flush()
}

// Ensure that the power-loss test catches a commit record made durable
// before the journal data it commits (lateJournal): some crash image
// then restores to a damaged journal, or to a mix.
func TestCheckpoint_powerLossCatchesEarlyCommit(t *testing.T) {
	problems, images, checkpoints, restarts := powerLoss(t, 1000, func(d *storetest.CrashDev) image.Dev { return &lateJournal{CrashDev: d} }, true)
	if len(problems) == 0 {
		t.Fatalf("%d crash images of %d checkpoints (%d restored by the daemon) with the commit record durable before its data: no problem found", images, checkpoints, restarts)
	}
	t.Logf("found after %d crash images of %d checkpoints: %s", images, checkpoints, problems[0])
}
