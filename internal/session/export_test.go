package session

// SetSweepHook makes every sweep call f after each mapping it protected.
func SetSweepHook(s *Server, f func(protected int)) { s.sweepHook = f }

// SetBrokenCut makes faults during a sweep resolve at once (test only).
func SetBrokenCut(s *Server, broken bool) { s.brokenCut.Store(broken) }
