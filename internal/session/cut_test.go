package session_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
)

// TestCut_NotedPagesProtectedAgain: the cut's sweep resolves faults at
// once and notes their pages; its held phase must protect those pages
// again. Four writers append causally ordered records while the sweep
// waits, after protecting the first mapping, until that mapping's writer
// has faulted: the snapshot must be prefix-closed, with the noted pages
// counted as protected again. The first snapshot is cut with no snapshot
// of the volume yet (WriteGranularity 0: a fault un-protects 2 MiB, here
// the whole volume); the second while the first is active (a fault
// un-protects its chunk, after copying it; the sweep waits for 8). Then
// the same with the held phase broken (Hooks.SkipReprotect: faults still
// held, the noted pages left writable): the writers go twice round their
// rings, storing to those pages after the activation without a copy, and
// the checker must catch the snapshot. In "rounds", the sweep protects
// the noted pages again in further rounds before it holds.
func TestCut_NotedPagesProtectedAgain(t *testing.T) {
	t.Run("held", func(t *testing.T) { testNotedPages(t, false) })
	t.Run("rounds", func(t *testing.T) {
		defer session.SetHoldBudget(0)()
		testNotedPages(t, true)
	})
	t.Run("pieces", func(t *testing.T) {
		// Sweeps and re-protection in 64 KiB pieces: the writers store
		// between the pieces of one mapping's sweep.
		defer session.SetWPPiece(64 << 10)()
		testNotedPages(t, false)
	})
}

func testNotedPages(t *testing.T, rounds bool) {
	const writers = 4
	r := newRig(t, "mem", "cow0", "cow1", "cow2")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	cs := startCausal(t, r, writers)
	defer r.setSweepHook(nil)
	st := r.srv.Stats()
	for k, faults := range []int64{1, 8} {
		r.setSweepFaultsHook(firstFaults(t, faults))
		time.Sleep(10 * time.Millisecond)
		re0, rounds0 := st.Reprotected.Load(), st.Rounds.Load()
		name := fmt.Sprintf("good%d", k)
		good := r.takeSnapshot(t, name, fmt.Sprintf("cow%d", k), vol)
		if n := st.Rounds.Load() - rounds0; rounds != (n > 0) {
			t.Errorf("%s: %d further sweep rounds, want them (%v) only with the threshold 0", name, n, rounds)
		}
		if n := st.Reprotected.Load() - re0; n < faults {
			t.Errorf("%s: %d pages protected again after the sweep, want at least the %d its first writer faulted on", name, n, faults)
		}
		// The writers store over every page after the cut: a noted page
		// left writable would take them without a copy.
		twoRings(t, vol, writers)
		last, err := clienttest.CheckCausal(readAll(t, good), writers)
		if err != nil {
			t.Fatalf("%s, taken with the two-phase cut, is not prefix-closed: %v", name, err)
		}
		t.Logf("%s: writers end at records %v; %d pages protected again, %d further rounds", name, last, st.Reprotected.Load()-re0, st.Rounds.Load()-rounds0)
	}

	r.skipReprotect.Store(true)
	broken := r.takeSnapshot(t, "broken", "cow2", vol)
	r.skipReprotect.Store(false)
	twoRings(t, vol, writers)
	if _, err := clienttest.CheckCausal(readAll(t, broken), writers); err == nil {
		t.Error("the checker passed a snapshot taken with the held phase broken (pages noted during the sweep left writable)")
	} else {
		t.Logf("broken held phase caught: %v", err)
	}
	for _, c := range cs {
		c.Do("stop")
		c.Do("quit")
	}
}

// TestCut_RoundsUnprotectPages: during a cut's sweep a fault on a device
// that needs no store seen un-protects 2 MiB (a writer's hot range then
// costs it a few faults), but during the further rounds it un-protects
// its page only, or the noted set, a writer's whole hot range again,
// would never shrink and the held phase would protect all of it again.
// One writer stores once during the sweep (2 MiB noted) and once after
// the first round protected those 2 MiB again: the cut must protect
// 512 pages again for the first and 1 for the second, not 512 twice.
func TestCut_RoundsUnprotectPages(t *testing.T) {
	defer session.SetHoldBudget(0)()
	const size = 4 << 20 // two sweep units
	r := newRigSized(t, size, "mem")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", size/512, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", size)
	r.setSweepFaultsHook(func(protected int, resolved func() int64) {
		f0 := resolved()
		c.Do("poke 4096")
		waitResolved(t, resolved, f0+1)
	})
	defer r.setSweepHook(nil)
	round := func(n int) {
		if n == 1 {
			c.Do("poke %d", 1<<20+4096) // in the 2 MiB the sweep's fault un-protected
		}
	}
	r.round.Store(&round)
	defer r.round.Store(nil)
	st := r.srv.Stats()
	re0, rounds0 := st.Reprotected.Load(), st.Rounds.Load()
	if err := vol.Suspend(dm.SuspendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := vol.Resume(); err != nil {
		t.Fatal(err)
	}
	const unit = 2 << 20 / 4096
	if n, rounds := st.Reprotected.Load()-re0, st.Rounds.Load()-rounds0; n != unit+1 {
		t.Errorf("%d pages protected again in %d further rounds and the held phase, want %d: the %d of the sweep's fault and the one page of the round's", n, rounds, unit+1, unit)
	}
}

// waitResolved waits, for up to a minute, until resolved reaches n.
func waitResolved(t *testing.T, resolved func() int64, n int64) {
	for deadline := time.Now().Add(time.Minute); resolved() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("%d faults resolved in a minute, want %d", resolved(), n)
			return
		}
	}
}

// TestCut_EndReleasesHeldFaultsFirst: a cut's end lifts the protection
// of the mappings nothing needs any more, a walk of every page mapped
// that grows with the size mapped (about 15 ms per GiB); the writers it
// held must not wait for it. A store held by a suspend's cut of a volume
// with no snapshot must complete before the end lifts the protection
// (Hooks.Lift waits for it there).
func TestCut_EndReleasesHeldFaultsFirst(t *testing.T) {
	r := newRig(t, "mem")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	st := r.srv.Stats()
	if err := vol.Suspend(dm.SuspendOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Send("poke 4096")
	for deadline := time.Now().Add(10 * time.Second); st.Held.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			vol.Resume()
			t.Fatal("the store during the suspend was not held")
		}
	}
	var done bool
	lift := func() { _, done = c.Wait(10 * time.Second) }
	r.lift.Store(&lift)
	defer r.lift.Store(nil)
	if err := vol.Resume(); err != nil {
		t.Fatal(err)
	}
	if !done {
		c.Wait(time.Minute)
		t.Fatal("the held store had not completed when the cut's end lifted the protection: it waited for the lift")
	}
	if img := readAll(t, vol); img[4096] != 0xa5 {
		t.Errorf("origin byte 4096 = %#x after the store, want 0xa5", img[4096])
	}
}

// TestCut_SweepsInPieces: the kernel holds a client's mmap lock for the
// whole range of one UFFDIO_WRITEPROTECT, and whatever of the client needs
// it exclusively (an mmap, a munmap) waits that long, with every later
// taker behind it: a cut's sweep and its end's lift of the protection go
// in pieces of at most SetWPPiece bytes. With 1 MiB pieces, a suspend's
// sweep of a 4 MiB mapping is 4 calls, and so is its resume's lift (the
// volume has no snapshot); a store then goes through.
func TestCut_SweepsInPieces(t *testing.T) {
	defer session.SetWPPiece(mib)()
	const size = 4 * mib
	r := newRigSized(t, size, "mem")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", size/512, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", size)
	st := r.srv.Stats()
	calls := st.WPCalls.Load()
	if err := vol.Suspend(dm.SuspendOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := st.WPCalls.Load() - calls; n != size/mib {
		t.Errorf("the sweep of a %d-byte mapping made %d write-protect calls, want %d of 1 MiB", size, n, size/mib)
	}
	calls = st.WPCalls.Load()
	if err := vol.Resume(); err != nil {
		t.Fatal(err)
	}
	if n := st.WPCalls.Load() - calls; n != size/mib {
		t.Errorf("the lift of the protection of a %d-byte mapping made %d write-protect calls, want %d of 1 MiB", size, n, size/mib)
	}
	c.Do("poke %d", size-4096)
	if img := readAll(t, vol); img[size-4096] != 0xa5 {
		t.Errorf("origin byte %d = %#x after the store, want 0xa5", size-4096, img[size-4096])
	}
}
