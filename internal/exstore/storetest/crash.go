package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/exstore"
)

// checkConcurrent commits from many goroutines at once on a device with a
// slow flush: all must be recorded, and they must share flushes.
func checkConcurrent(t testing.TB, f Factory) {
	const chunk, chunks, workers, per = 1, 400, 16, 20
	dev := NewCrashDev("concurrent.cow", chunks*512)
	dev.SetFlushDelay(200 * time.Microsecond)
	s, _ := mustOpen(t, f, dev, chunk)
	defer func() { s.Close() }()

	before := dev.Flushes()
	var mu sync.Mutex
	var all []exstore.Exception
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				e, err := add(s, dev, exstore.Chunk(w*1000+i))
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				mu.Lock()
				all = append(all, e)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	flushes, commits := dev.Flushes()-before, int64(workers*per)
	t.Logf("%d commits from %d goroutines: %d flushes", commits, workers, flushes)
	if flushes >= commits {
		t.Errorf("%d commits from %d goroutines at once took %d flushes: concurrent commits must share metadata writes and flushes (group commit)",
			commits, workers, flushes)
	}
	news := map[exstore.Chunk]bool{}
	for _, e := range all {
		if news[e.New] {
			t.Fatalf("Prepare handed out COW chunk %d twice", e.New)
		}
		news[e.New] = true
	}
	if !f.Persistent {
		return
	}
	s.Close()
	var got []exstore.Exception
	s, got = mustOpen(t, f, dev, chunk)
	if err := sameSet(got, all); err != nil {
		t.Errorf("reopen: %v", err)
	}
	if err := checkData(dev, chunk, got); err != nil {
		t.Error(err)
	}
}

// crashPoint is a crash image and what the test knew when it was taken.
type crashPoint struct {
	dev    *CrashDev
	acked  []exstore.Exception // Commit had returned nil: must be there
	issued []exstore.Exception // Commit had been called: may be there
}

// checkCrash commits one exception at a time on a device that is not wiped
// and crashes it at random device operations, inside the store's commits.
// Each crash image must load exactly a prefix of the commits that includes
// every acknowledged one, with their data.
func checkCrash(t testing.TB, f Factory) {
	if !f.Persistent {
		t.Skip("store is not persistent: a crash loses everything by design")
	}
	const chunk, chunks = 1, 300
	rng := f.rng(t)
	dev := NewCrashDev("crash.cow", chunks*512)
	dev.SetContents(garbage(rng, chunks*512, chunk))
	olds := distinctOlds(rng, 200)
	var mu sync.Mutex // guards rng, acked, issued, points: a broken store may commit in the background
	var acked, issued []exstore.Exception
	var points []crashPoint
	dev.SetHook(func() {
		mu.Lock()
		defer mu.Unlock()
		if rng.IntN(5) == 0 {
			points = append(points, crashPoint{crashClone(dev, rng), slices.Clone(acked), slices.Clone(issued)})
		}
	})
	s, _ := mustOpen(t, f, dev, chunk)
	for _, old := range olds {
		if err := crashAdd(s, dev, old, &mu, &acked, &issued); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	dev.SetHook(nil)
	points = append(points, crashPoint{dev.CrashClone(nil), acked, issued})
	t.Logf("%d crash points", len(points))
	for i, p := range points {
		if err := verifyCrash(f, p, chunk, crashCheck{ordered: true, resume: i%4 == 0}); err != nil {
			t.Errorf("crash point %d of %d (%d acknowledged, %d issued): %v", i, len(points), len(p.acked), len(p.issued), err)
		}
	}
}

// crashClone keeps unflushed writes at random in half of the clones.
func crashClone(dev *CrashDev, rng *rand.Rand) *CrashDev {
	if rng.IntN(2) == 0 {
		return dev.CrashClone(nil)
	}
	return dev.CrashClone(rng)
}

// checkCrashConcurrent is checkCrash with many committers at once, so the
// crashes hit batched commits and area changes under load.
func checkCrashConcurrent(t testing.TB, f Factory) {
	if !f.Persistent {
		t.Skip("store is not persistent: a crash loses everything by design")
	}
	const chunk, chunks, workers, per = 1, 400, 8, 30
	rng := f.rng(t)
	dev := NewCrashDev("crash-concurrent.cow", chunks*512)
	dev.SetContents(garbage(rng, chunks*512, chunk))
	dev.SetFlushDelay(50 * time.Microsecond)
	var mu sync.Mutex // guards rng, acked, issued, points
	var acked, issued []exstore.Exception
	var points []crashPoint
	dev.SetHook(func() {
		mu.Lock()
		defer mu.Unlock()
		if rng.IntN(8) == 0 {
			points = append(points, crashPoint{crashClone(dev, rng), slices.Clone(acked), slices.Clone(issued)})
		}
	})
	s, _ := mustOpen(t, f, dev, chunk)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				if err := crashAdd(s, dev, exstore.Chunk(w*1000+i), &mu, &acked, &issued); err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	s.Close()
	dev.SetHook(nil)
	points = append(points, crashPoint{dev.CrashClone(nil), acked, issued})
	t.Logf("%d crash points", len(points))
	for i, p := range points {
		if err := verifyCrash(f, p, chunk, crashCheck{resume: i%4 == 0}); err != nil {
			t.Errorf("crash point %d of %d (%d acknowledged, %d issued): %v", i, len(points), len(p.acked), len(p.issued), err)
		}
	}
}

func crashAdd(s exstore.Store, dev *CrashDev, old exstore.Chunk, mu *sync.Mutex, acked, issued *[]exstore.Exception) error {
	c, err := s.Prepare()
	if err != nil {
		return err
	}
	e := exstore.Exception{Old: old, New: c}
	if err := writeData(s, dev, e); err != nil {
		return err
	}
	mu.Lock()
	*issued = append(*issued, e)
	mu.Unlock()
	if err := s.Commit(e); err != nil {
		return err
	}
	mu.Lock()
	*acked = append(*acked, e)
	mu.Unlock()
	return nil
}

// crashCheck is what verifyCrash checks beyond its baseline.
type crashCheck struct {
	// ordered: what loads must be a prefix of the issue order (one
	// committer).
	ordered bool
	// resume: the recovered store must take a new exception and keep it
	// across a reopen.
	resume bool
}

// verifyCrash loads the crash image: every acknowledged exception must be
// there, nothing that was not issued, and every loaded exception's data
// must be in its COW chunk; then what c asks for.
func verifyCrash(f Factory, p crashPoint, chunk exstore.Sector, c crashCheck) error {
	s, got, err := openLoad(f, p.dev, chunk)
	if err != nil {
		return err
	}
	defer s.Close()
	if c.ordered {
		if len(got) > len(p.issued) || sameList(got, p.issued[:len(got)]) != nil {
			return fmt.Errorf("loaded %d exceptions that are not a prefix of the %d issued in order: %v", len(got), len(p.issued), sameList(got, p.issued[:min(len(got), len(p.issued))]))
		}
		if len(got) < len(p.acked) {
			return fmt.Errorf("acknowledged exception %v is lost (loaded %d)", p.acked[len(got)], len(got))
		}
	} else if err := subsetOf(got, p.acked, p.issued); err != nil {
		return err
	}
	if err := checkData(p.dev, chunk, got); err != nil {
		return err
	}
	if !c.resume {
		return nil
	}
	return resumeAfterCrash(f, p.dev, chunk, s, got)
}

// subsetOf checks acked ⊆ got ⊆ issued.
func subsetOf(got, acked, issued []exstore.Exception) error {
	in := make(map[exstore.Exception]bool, len(got))
	for _, e := range got {
		if in[e] {
			return fmt.Errorf("loaded %v twice", e)
		}
		in[e] = true
	}
	for _, e := range acked {
		if !in[e] {
			return fmt.Errorf("acknowledged exception %v is lost (loaded %d of %d acknowledged)", e, len(got), len(acked))
		}
	}
	iss := make(map[exstore.Exception]bool, len(issued))
	for _, e := range issued {
		iss[e] = true
	}
	for _, e := range got {
		if !iss[e] {
			return fmt.Errorf("loaded %v, which was never committed", e)
		}
	}
	return nil
}

func resumeAfterCrash(f Factory, dev *CrashDev, chunk exstore.Sector, s exstore.Store, got []exstore.Exception) error {
	e, err := add(s, dev, 1<<30)
	if errors.Is(err, exstore.ErrNoSpace) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("after recovery: %w", err)
	}
	for _, g := range got {
		if g.New == e.New {
			return fmt.Errorf("after recovery, Prepare returned COW chunk %d, which loaded exception %v uses", e.New, g)
		}
	}
	s.Close()
	s2, again, err := openLoad(f, dev, chunk)
	if err != nil {
		return fmt.Errorf("reopen after recovery: %w", err)
	}
	defer s2.Close()
	if err := sameSet(again, append(slices.Clone(got), e)); err != nil {
		return fmt.Errorf("reopen after recovery: %w", err)
	}
	return nil
}
