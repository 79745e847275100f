package session

// SetSweepHook makes every sweep call f after each mapping it protected.
func SetSweepHook(s *Server, f func(protected int)) {
	if f == nil {
		s.sweepHook = nil
		return
	}
	s.sweepHook = func(protected int, _ func() int64) { f(protected) }
}

// SetSweepFaultsHook is SetSweepHook with a reader of the write faults
// counted so far on the mapping just protected.
func SetSweepFaultsHook(s *Server, f func(protected int, faults func() int64)) { s.sweepHook = f }

// SetBrokenCut makes faults during a sweep resolve at once (test only).
func SetBrokenCut(s *Server, broken bool) { s.brokenCut.Store(broken) }

// SetUnmapHook makes a fault handler that saw its client unmap call f
// before it lets the mapping go (nil: none).
func SetUnmapHook(s *Server, f func()) {
	if f == nil {
		s.unmapHook.Store(nil)
		return
	}
	s.unmapHook.Store(&f)
}

// ByFileMode is the AuthorizeFile of a server whose Config has none.
var ByFileMode = byFileMode

// DeviceStates counts the devices the server keeps state for.
func DeviceStates(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.devs)
}
