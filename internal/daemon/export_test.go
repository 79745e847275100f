package daemon

import (
	"context"
	"time"

	"github.com/daxsnap/daxsnap/internal/state"
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

// RestoreImage opens the checkpoint image at path and its journal through
// devs as a restore at start opens it (openImage), and returns its newest
// complete checkpoint (0: none, which a restore refuses) and the contents
// a restore copies into the volume.
func RestoreImage(devs CheckpointDevs, path, journal string) (seq uint64, data []byte, err error) {
	img, err := openImage(devs, state.Checkpoint{Path: path, Journal: journal}, 0, 0, false)
	if err != nil {
		return 0, nil, err
	}
	defer img.Close()
	last, _ := img.Last()
	data = make([]byte, img.Size())
	if _, err := img.ReadAt(data, 0); err != nil {
		return last.Seq, nil, err
	}
	return last.Seq, data, nil
}

// RestoreBlock and RestoreStreams are a restore's block size and reads
// in flight, for its benchmark's peer.
const RestoreBlock, RestoreStreams = restoreBlock, restoreStreams
