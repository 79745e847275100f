package session

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// cut is one consistent cut under way (see Cut): the memory it covers and
// the devices whose faults it holds.
type cut struct {
	mem  []dm.MemRange
	why  string
	held []*devState // under protMu
	// holdStart is when the held phase began (zero: the cut protected
	// nothing), for Stats.CutHoldNanos.
	holdStart time.Time
}

// covers reports whether the cut covers some of m's memory.
func (c *cut) covers(m *mapping) bool {
	for _, p := range m.mem {
		for _, r := range c.mem {
			if p.Overlaps(r) {
				return true
			}
		}
	}
	return false
}

// hold holds ds's faults for the cut, once.
func (c *cut) hold(ds *devState) {
	if !slices.Contains(c.held, ds) {
		ds.hold()
		c.held = append(c.held, ds)
	}
}

// hold makes every later fault on the device's mappings wait for unhold;
// it waits for the resolutions under way.
func (ds *devState) hold() {
	ds.mu.Lock()
	if ds.holds == 0 {
		ds.sweeping = make(chan struct{})
	}
	ds.holds++
	ds.mu.Unlock()
}

func (ds *devState) unhold() {
	ds.mu.Lock()
	ds.holds--
	if ds.holds == 0 {
		close(ds.sweeping)
		ds.sweeping = nil
	}
	ds.mu.Unlock()
}

// Cut is the consistent cut of memory (a dm.Cutter, installed on the
// device manager). It covers every armed writable mapping of mem (of
// every mapping whose pieces overlap it, made through any device) and
// runs in two phases, so that writers wait for a time that does not grow
// with the size mapped:
//
//  1. The sweep: each covered mapping is write-protected whole while its
//     writers go on. A write fault then is resolved at once, through the
//     usual path (copy-before-write for the snapshots already active,
//     then un-protect), and the range it un-protected is noted on the
//     mapping (mapping.unprotect). While many pages were noted, up to
//     maxRounds further rounds protect the noted ranges again, still
//     without holding, each noting what its writers touch meanwhile.
//  2. The held phase: every write fault of the covered mappings' devices
//     is held (after the resolutions under way have finished), the ranges
//     noted since the last round are protected again, and Cut returns.
//
// Every page is then protected: those not noted since the sweep reached
// them, the noted ones again. No store reaches mem until end: the image
// taken now holds exactly the stores that reached memory before the end
// of the held phase, a prefix-closed image. end resolves the held faults
// through the tables live then (a snapshot activated meanwhile copies
// first) and lifts the protection of mappings no snapshot and no other
// cut needs.
//
// protMu is held throughout: no other cut starts or ends and no mapping
// is armed during the two phases, so a mapping another cut covers is
// protected with its faults held already (it is skipped), and a mapping
// armed during a cut (after Cut returned, before end) comes protected
// with its faults held. The dm core calls Cut when a device is suspended
// (until its resume) and when a snapshot becomes live (around its
// activation); see dm/cut.go. A fault resolved during the sweep may run a
// device's copy-before-write: no device a covered mapping reaches is
// suspended then, since a suspended device's own cut covers every
// mapping of its memory (and such mappings are skipped), and a suspend
// cuts before it stops I/O.
func (s *Server) Cut(mem []dm.MemRange, why string) (end func()) {
	start := time.Now()
	c := &cut{mem: mem, why: why}
	s.protMu.Lock()
	// A mapping another cut covers is protected already, and stays so
	// while that cut lasts.
	var others []*cut
	for o := range s.cuts {
		others = append(others, o)
	}
	s.cuts[c] = struct{}{}
	s.stats.Cuts.Add(1)
	maps := s.mappingsUnder(c)
	var sweep []*mapping // the mappings this cut protects
	for _, m := range maps {
		if !slices.ContainsFunc(others, func(o *cut) bool { return o.covers(m) }) {
			sweep = append(sweep, m)
		}
	}
	// Noting starts before any protection: an un-protect between a
	// mapping's protection and the start of its noting would be lost.
	for _, m := range sweep {
		m.startNoting()
	}
	var errs []error
	fail := func(m *mapping, err error) {
		errs = append(errs, fmt.Errorf("pid %d, mapping %d of %s: %w", m.sess.pid, m.id, m.dev.Name(), err))
	}
	// Phase 1: the sweep, writers running.
	for i, m := range sweep {
		before := m.resolved.Load()
		if err := m.protectAll(); err != nil {
			fail(m, err)
		}
		if h := s.cfg.Hooks.Sweep; h != nil {
			h(i+1, func() int64 { return m.resolved.Load() - before })
		}
	}
	// Further rounds while protecting the noted ranges again would hold
	// the writers long: each protects again what the previous one noted,
	// without holding.
	for round, prev := 0, time.Duration(-1); round < maxRounds; round++ {
		var cost time.Duration
		for _, m := range sweep {
			cost += m.notedCost()
		}
		if cost <= holdBudget || (prev >= 0 && cost >= prev) {
			break // short enough to hold for, or not shrinking
		}
		prev = cost
		s.stats.Rounds.Add(1)
		for _, m := range sweep {
			spans := m.takeNoted(false)
			if !s.skipReprotect() {
				s.stats.Reprotected.Add(m.reprotect(spans, fail))
			}
		}
		if h := s.cfg.Hooks.Round; h != nil {
			h(round + 1)
		}
	}
	// Phase 2: hold, protect the last noted ranges again.
	hold := time.Now()
	for _, m := range maps {
		c.hold(m.ds)
	}
	// With every covered device held no resolution runs: nothing is
	// un-protected or noted any more.
	held := time.Now()
	var heldSpans int
	var heldPages int64
	for _, m := range sweep {
		spans := m.takeNoted(true)
		heldSpans += len(spans)
		if !s.skipReprotect() {
			n := m.reprotect(spans, fail)
			heldPages += n
			s.stats.Reprotected.Add(n)
		}
	}
	if len(sweep) > 0 {
		s.log.Debug("cut: held phase", "cut", why, "mappings", len(sweep), "sweep", hold.Sub(start),
			"wait_for_resolutions", held.Sub(hold), "protect_again", time.Since(held), "ranges", heldSpans, "pages", heldPages)
	}
	if h := s.cfg.Hooks.Hold; h != nil {
		h()
	}
	if len(sweep) > 0 {
		c.holdStart = hold
	}
	s.protMu.Unlock()
	if len(sweep) > 0 {
		now := time.Now()
		s.stats.Sweeps.Add(1)
		s.stats.SweepNanos.Add(int64(now.Sub(start)))
		storeMax(&s.stats.SweepMaxNanos, int64(now.Sub(start)))
		s.stats.HoldPhaseNanos.Add(int64(now.Sub(hold)))
		storeMax(&s.stats.HoldPhaseMaxNanos, int64(now.Sub(hold)))
	}
	if err := errors.Join(errs...); err != nil {
		// The mapping's stores are not caught: say so loudly (its process
		// may be gone, which protectAll already forgives).
		s.stats.HandlerErrors.Add(1)
		s.log.Error("cut: a mapping could not be write-protected; its stores escape the cut", "cut", why, "err", err)
	}
	var once sync.Once
	return func() { once.Do(func() { s.endCut(c) }) }
}

// maxRounds bounds the sweep's further rounds (Cut); holdBudget is the
// estimated time to protect the noted ranges again (mapping.notedCost)
// below which the held phase starts at once. A round makes the writers
// fault again on every page it protects (a page a fault: a few thousand
// faults for a writer's hot range, spread over the round), so it runs
// only while the held phase would take longer than a writer's fault
// takes to serve under load: the estimate's 60 ns a page is a quiet
// machine's, and a loaded one takes twice that or more (4 writers on 2
// CPUs: 32 MiB protected again in 1.1 ms, estimated at 0.5).
const maxRounds = 3

var holdBudget = 100 * time.Microsecond // a variable for tests (SetHoldBudget)

// storeMax raises v to d if d is larger.
func storeMax(v *atomic.Int64, d int64) {
	for {
		old := v.Load()
		if d <= old || v.CompareAndSwap(old, d) {
			return
		}
	}
}

// endCut ends c: the held faults go, then mappings under it that no other
// cut covers and whose device needs no store caught are un-protected.
func (s *Server) endCut(c *cut) {
	s.protMu.Lock()
	defer s.protMu.Unlock()
	delete(s.cuts, c)
	s.stats.Cuts.Add(-1)
	if !c.holdStart.IsZero() {
		d := int64(time.Since(c.holdStart))
		s.stats.CutHoldNanos.Add(d)
		storeMax(&s.stats.CutHoldMaxNanos, d)
	}
	// The held faults go first: they resolve through the tables live now
	// (un-protecting their unit, after copy-before-write if a snapshot
	// needs it), while the protection of the mappings nothing needs any
	// more is lifted below, a walk of every page mapped (about 15 ms per
	// GiB): a writer held by the cut must not wait for it. Lifting it here,
	// under protMu, is what keeps it from lifting a later cut's: the held
	// faults' resolutions only un-protect, as the lift does.
	for _, ds := range c.held {
		ds.unhold()
	}
	if h := s.cfg.Hooks.Lift; h != nil {
		h()
	}
	for _, m := range s.mappingsUnder(c) {
		if m.uffd == nil || m.dropped.Load() || s.underCut(m) {
			continue
		}
		// No cut covers m's memory, so no device it reaches is suspended:
		// this does not wait.
		if m.dev.WriteGranularity(m.off, m.n) == 0 {
			m.unprotect(m.off, m.n)
		}
	}
}

// underCut reports whether a cut under way covers m; protMu held.
func (s *Server) underCut(m *mapping) bool {
	for c := range s.cuts {
		if c.covers(m) {
			return true
		}
	}
	return false
}

// mappingsUnder lists the armed writable mappings c covers, once each.
func (s *Server) mappingsUnder(c *cut) []*mapping {
	s.mu.Lock()
	states := make([]*devState, 0, len(s.devs))
	for _, ds := range s.devs {
		states = append(states, ds)
	}
	s.mu.Unlock()
	var out []*mapping
	for _, ds := range states {
		for _, m := range ds.list() {
			if m.ds == ds && m.uffd != nil && c.covers(m) {
				out = append(out, m)
			}
		}
	}
	return out
}

// armUnderCuts, with protMu held, holds m's faults for every cut that
// covers it, and reports whether one does (m must then come protected).
func (s *Server) armUnderCuts(m *mapping) bool {
	under := false
	for c := range s.cuts {
		if c.covers(m) {
			c.hold(m.ds)
			under = true
		}
	}
	return under
}

// brokenCut reports whether a test breaks the cut (Hooks.BrokenCut).
func (s *Server) brokenCut() bool {
	return s.cfg.Hooks.BrokenCut != nil && s.cfg.Hooks.BrokenCut()
}

// skipReprotect reports whether a test breaks the cut's second phase
// (Hooks.SkipReprotect, or the whole cut: Hooks.BrokenCut).
func (s *Server) skipReprotect() bool {
	return s.cfg.Hooks.SkipReprotect != nil && s.cfg.Hooks.SkipReprotect() || s.brokenCut()
}
