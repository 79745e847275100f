package uffd

import (
	"testing"
	"time"
)

// spins runs k waits of s, each returning its message after
// waited(spin): it returns how many of them spun.
func spins(s *Spinner, k int, waited func(spin time.Duration) time.Duration) int {
	n := 0
	for range k {
		spin := s.next()
		if spin > 0 {
			n++
		}
		s.observe(spin, waited(spin))
	}
	return n
}

// testMax is the Spinner's Max in these tests.
const testMax = 50 * time.Microsecond

// Times of a wait's message, for spins: starved, a writer on the
// handler's CPU, faults just after the spin ran out and the handler
// blocked; caught, a writer on a CPU of its own, while the handler spins.
func starved(spin time.Duration) time.Duration { return spin + 12*time.Microsecond }
func caught(time.Duration) time.Duration       { return 8 * time.Microsecond }

// A writer woken on the handler's CPU faults again only once the spin
// has run out and the handler blocks: the Spinner stops spinning, spins
// again now and then to see whether the writer moved, and less often
// while it has not.
func TestSpinner_StopsSpinningForAWriterOnItsCPU(t *testing.T) {
	s := &Spinner{Max: testMax}
	if n := spins(s, 2, starved); n != 2 {
		t.Fatalf("first wait and the probe of its sign: spun %d times, want 2", n)
	}
	if n := spins(s, starveSkip, starved); n != 0 {
		t.Fatalf("after a run-out spin and a message %v after blocking, %d of the next %d waits spun, want none",
			12*time.Microsecond, n, starveSkip)
	}
	// The probe spins, runs out again: twice as long without spinning.
	if n := spins(s, 2+2*starveSkip, starved); n != 2 {
		t.Fatalf("probe and the doubled skip: spun %d times, want 2", n)
	}
	for range 10 { // the skip stops growing
		spins(s, 2+maxStarveSkip, starved)
	}
	if s.skips != maxStarveSkip {
		t.Fatalf("skip after many signs = %d, want %d", s.skips, maxStarveSkip)
	}
}

// A message caught while spinning means the spin pays: the Spinner
// keeps spinning, and a later sign starts again from the first skip.
func TestSpinner_KeepsSpinningWhileItCatches(t *testing.T) {
	s := &Spinner{Max: testMax}
	if n := spins(s, 100, caught); n != 100 {
		t.Fatalf("messages caught while spinning: %d of 100 waits spun", n)
	}
	// A writer away for long (descheduled, or thinking): the run-out spin
	// says nothing about its CPU.
	away := func(spin time.Duration) time.Duration { return spin + 300*time.Microsecond }
	if n := spins(s, 10, away); n != 10 {
		t.Fatalf("writer away: %d of 10 waits spun, want all", n)
	}
	spins(s, 2+starveSkip, starved)
	spins(s, 1, caught) // the probe catches: back to spinning
	if n := spins(s, 10, caught); n != 10 || s.skips != 0 {
		t.Fatalf("after a catch: %d of 10 waits spun, skip %d; want 10 and 0", n, s.skips)
	}
	var zero Spinner
	if n := spins(&zero, 5, caught); n != 0 {
		t.Fatalf("zero Spinner spun %d times", n)
	}
}

// A writer that comes back on a CPU of its own, later than Max (an idle
// VM wakes a sleeping CPU in 20-30 µs), looks like a starved one after a
// run-out spin; the longer probe catches it, and the Spinner keeps
// spinning, longer, instead of blocking for hundreds of waits.
func TestSpinner_SpinsLongerForALateWriter(t *testing.T) {
	s := &Spinner{Max: testMax}
	late := func(spin time.Duration) time.Duration { return 70 * time.Microsecond }
	if n := spins(s, 100, late); n != 100 {
		t.Fatalf("a writer back after 70 µs: %d of 100 waits spun, want all", n)
	}
	if got := s.next(); got != 2*testMax {
		t.Fatalf("spin after the probe caught: %v, want %v", got, 2*testMax)
	}
	// It moves onto the handler's CPU: the longer spin runs out and the
	// message follows at once, a sign confirmed without another probe.
	spins(s, 1, starved)
	if n := spins(s, starveSkip, starved); n != 0 {
		t.Fatalf("starved after the long spin: %d of %d waits spun, want none", n, starveSkip)
	}
}
