package session

import "time"

// ByFileMode is the AuthorizeFile of a server whose Config has none.
var ByFileMode = byFileMode

// DeviceStates counts the devices the server keeps state for.
func DeviceStates(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.devs)
}

// SetHoldBudget sets the estimated re-protection time below which a cut
// holds at once (further sweep rounds run while it is more) until
// restore.
func SetHoldBudget(d time.Duration) (restore func()) {
	old := holdBudget
	holdBudget = d
	return func() { holdBudget = old }
}

// SetWPPiece sets the largest range of one UFFDIO_WRITEPROTECT of a sweep
// or a lift (mapping.inPieces) until restore.
func SetWPPiece(n int64) (restore func()) {
	old := wpPiece.Swap(n)
	return func() { wpPiece.Store(old) }
}
