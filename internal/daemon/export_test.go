package daemon

// DisableCut takes the consistent cut away from d's device manager (as
// before the core made it), until the returned function puts it back:
// tests show their checkers catch what the cut prevents.
func DisableCut(d *Daemon) (restore func()) {
	d.mgr.SetCutter(nil)
	return func() { d.mgr.SetCutter(d.sessions.Cut) }
}
