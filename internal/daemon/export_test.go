package daemon

import (
	"context"
	"time"
)

// DisableCut takes the consistent cut away from d's device manager (as
// before the core made it), until the returned function puts it back:
// tests show their checkers catch what the cut prevents.
func DisableCut(d *Daemon) (restore func()) {
	d.mgr.SetCutter(nil)
	return func() { d.mgr.SetCutter(d.sessions.srv.Cut) }
}

// Drain is the first phase of a clean stop (drain); it returns the users
// it broke, as they are described.
func (d *Daemon) Drain(force context.Context) []string {
	var out []string
	for _, u := range d.drain(force) {
		out = append(out, u.who)
	}
	return out
}

// SetDrainLogEvery sets how often a draining daemon logs its users.
func SetDrainLogEvery(every time.Duration) (reset func()) {
	old := drainLogEvery
	drainLogEvery = every
	return func() { drainLogEvery = old }
}

// DeviceStates counts the devices the daemon keeps a devState for.
func DeviceStates(d *Daemon) int {
	d.devs.mu.Lock()
	defer d.devs.mu.Unlock()
	return len(d.devs.m)
}
