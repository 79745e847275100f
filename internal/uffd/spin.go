package uffd

import "time"

// Spinner is Wait with a spin that stops when it holds back the writer it
// waits for. A spinning handler occupies its CPU; a writer the kernel
// wakes on that same CPU (the Unprotect that resolved its last fault woke
// it, and on a busy machine the waker's CPU is where it often lands) may
// not preempt the spin, and then stores and faults again only once the
// spin has run out and the handler blocks: the spin costs that writer its
// whole length instead of saving a wake-up. Its sign: a spin that ran out,
// then a message within starveGap of blocking, twice: a sign is first
// checked with a spin twice as long, which a writer that came back late
// on a CPU of its own (an idle VM's wake-up) is caught by, and then the
// Spinner keeps that longer spin. A confirmed sign makes it block
// at once for a number of waits (the two threads then alternate on one
// CPU, each wake-up cheap), then spins again to see whether the writer has
// moved; each further sign before a message is caught while spinning
// doubles that number, up to maxStarveSkip, and such a catch resets it.
//
// A Spinner is for one goroutine; its zero value never spins.
type Spinner struct {
	// Max is the spin of Wait (FD.Wait's spin) when it spins at all.
	Max time.Duration

	skip  int // waits left that do not spin
	skips int // the skip after the next sign, starveSkip..maxStarveSkip
	// probe: the next wait spins 2*Max to check a sign. A writer that
	// comes back on its own, only later than Max (on an idle VM its
	// CPU's wake-up alone takes 20-30 µs), is caught by it; a starved
	// one again faults just after the longer spin runs out.
	probe bool
	long  bool // a probe caught: spin 2*Max until the next sign
}

const (
	// starveGap: a message this soon after a run-out spin blocked came
	// from a writer that was ready to run and waiting for the handler's
	// CPU: on a loaded 2-CPU VM, of the messages that came after a spin
	// had run out, a third came 10-15 µs after blocking and another
	// quarter 15-40 µs; a writer on another CPU that had been away for
	// the whole spin rarely comes back just then.
	starveGap = 40 * time.Microsecond
	// starveSkip is how many waits block at once after the first sign.
	// A writer that stays on the handler's CPU still pays one spin per
	// skip: at 256, under 0.4 % of its faults.
	starveSkip    = 256
	maxStarveSkip = 4096
)

// Wait is fd.Wait(buf, spin, block) with the spin s decides.
func (s *Spinner) Wait(fd *FD, buf []Msg, block Block) (int, error) {
	spin := s.next()
	if spin <= 0 {
		return fd.Wait(buf, 0, block) // nothing to learn (observe)
	}
	start := time.Now()
	n, err := fd.Wait(buf, spin, block)
	if n > 0 {
		s.observe(spin, time.Since(start))
	}
	return n, err
}

// next returns the spin of the coming wait.
func (s *Spinner) next() time.Duration {
	if s.skip > 0 {
		s.skip--
		return 0
	}
	if s.probe || s.long {
		return 2 * s.Max
	}
	return s.Max
}

// observe learns from a wait that spun for spin and returned a message
// after waited.
func (s *Spinner) observe(spin, waited time.Duration) {
	switch {
	case spin <= 0:
	case waited <= spin:
		s.skips = 0 // caught while spinning: the spin pays
		s.long = s.long || s.probe
		s.probe = false
	case waited-spin < starveGap:
		if !s.probe && !s.long {
			s.probe = true // a sign: check it with a longer spin first
			return
		}
		s.probe, s.long = false, false
		s.skips = min(max(2*s.skips, starveSkip), maxStarveSkip)
		s.skip = s.skips
	default:
		s.probe = false // the writer was away: the probe says nothing
	}
}
