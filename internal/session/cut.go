package session

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// cut is one consistent cut under way (see Cut): the memory it covers and
// the devices whose faults it holds.
type cut struct {
	mem  []dm.MemRange
	why  string
	held []*devState // under protMu
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
// device manager): it holds every write fault on the mappings of mem
// (their devices' faults: of every mapping whose pieces overlap it, made
// through any device), waits for the resolutions under way, then
// write-protects each such mapping whole, and returns. From then on no
// store reaches mem until end: a store is in an image taken now iff it
// reached memory before its page was protected, so images are
// prefix-closed. end resolves the held faults through the tables live
// then (a snapshot activated meanwhile copies first) and lifts the
// protection of mappings no snapshot and no other cut needs. A mapping
// armed during the cut comes protected and its faults held. The dm core
// calls Cut when a device is suspended (until its resume) and when a
// snapshot becomes live (around its activation); see dm/cut.go.
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
	maps := s.mappingsUnder(c)
	for _, m := range maps {
		c.hold(m.ds)
	}
	var errs []error
	protected := 0
	for _, m := range maps {
		if slices.ContainsFunc(others, func(o *cut) bool { return o.covers(m) }) {
			continue
		}
		if err := m.protectAll(); err != nil {
			errs = append(errs, fmt.Errorf("pid %d, mapping %d of %s: %w", m.sess.pid, m.id, m.dev.Name(), err))
		}
		protected++
		if h := s.cfg.Hooks.Sweep; h != nil {
			h(protected, m.faults.Load)
		}
	}
	s.protMu.Unlock()
	if protected > 0 {
		s.stats.Sweeps.Add(1)
		s.stats.SweepNanos.Add(int64(time.Since(start)))
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

// endCut ends c: mappings under it that no other cut covers and whose
// device needs no store caught are un-protected, then the held faults go.
func (s *Server) endCut(c *cut) {
	s.protMu.Lock()
	defer s.protMu.Unlock()
	delete(s.cuts, c)
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
	for _, ds := range c.held {
		ds.unhold()
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
