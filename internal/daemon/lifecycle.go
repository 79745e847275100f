package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// quiesce flushes and suspends every device, devices stacked on others
// first, so that no I/O is in flight or admitted afterwards. A device the
// user left suspended cannot be flushed now; the daemon flushed it when
// it was suspended (see Suspend). The suspensions are not recorded: the
// next start brings devices back as the state file says.
func (d *Daemon) quiesce() error {
	order := d.mgr.StackOrder()
	slices.Reverse(order)
	d.held = d.heldDevices()
	var errs []error
	for _, dev := range order {
		name := dev.Name()
		if d.held[name] != "" {
			continue
		}
		in := dev.Info()
		if in.LiveTable && !in.Suspended {
			if err := dev.Flush(); err != nil {
				errs = append(errs, fmt.Errorf("flush %s: %w", name, err))
			}
		}
		// Nothing reaches the devices any more (the doors and the DAX
		// sessions are closed), and a restore on demand stopped (closeAll)
		// is continued by the next start: a filler must not refuse this.
		dev.SetFiller(nil)
		if err := dev.Suspend(dm.SuspendOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("suspend %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// closeDevices tears down every device in memory, devices stacked on
// others first, releasing their backing devices. The state file keeps
// them; this is only the daemon letting go.
func (d *Daemon) closeDevices() error {
	d.closing.Store(true)
	order := deviceNames(d.mgr.StackOrder())
	slices.Reverse(order)
	var errs []error
	for _, name := range order {
		if d.held[name] != "" {
			continue // its I/O may wait for ever; the process exit lets go of it
		}
		if err := d.mgr.Remove(name, dm.RemoveOptions{}); err != nil && !errors.Is(err, dm.ErrNotFound) {
			errs = append(errs, fmt.Errorf("close %s: %w", name, err))
		}
	}
	if n := d.pool.Len(); n > 0 && len(d.held) == 0 {
		errs = append(errs, fmt.Errorf("%d backing devices still open after closing every device", n))
	}
	return errors.Join(errs...)
}

// heldDevices finds the devices stacked (directly or not) on a device the
// user left suspended: I/O in flight on them waits for a resume that will
// not come, so shutdown must not wait for it. It maps each to the
// suspended device below it, and logs what to do.
func (d *Daemon) heldDevices() map[string]string {
	held := map[string]string{}
	for _, dev := range d.mgr.List() {
		if !dev.Info().Suspended {
			continue
		}
		for _, above := range d.mgr.Over(dev) {
			held[above.Name()] = dev.Name()
		}
	}
	for above, below := range held {
		d.log.Warn("device sits on a suspended device: not flushed or closed at shutdown (resume the device below first for a clean stop)",
			"device", above, "suspended", below)
	}
	return held
}

// A clean stop has two phases. The first (drain) lets the users of the
// devices finish: nothing new opens (NBD connections, FUSE opens, DAX
// maps, and the API verbs that make new devices, snapshots or merges),
// what is open goes on being served, and the daemon logs who still holds
// what every few seconds, until the last user lets go. Being forced (a
// second signal, or `serve --shutdown-timeout`) ends the wait; the log
// then names every user the stop breaks. The second phase (Shutdown)
// closes everything.

// drainLogEvery is how often a draining daemon logs who holds it.
var drainLogEvery = 5 * time.Second

// refuseWhileStopping refuses op once a stop has begun.
func (d *Daemon) refuseWhileStopping(op string) error {
	if !d.stopping.Load() {
		return nil
	}
	return errorf(dm.ErrBusy, "%s: daxsnap is stopping: it serves what is open until the last user lets go, and opens or starts nothing new; run it again after `daxsnap serve` restarts", op)
}

// usersChanged tells the waiters that a device user let go.
func (d *Daemon) usersChanged() { d.userEvents.notify() }

// drain stops new opens and waits until no user holds a device, or until
// force ends; then it logs every user the stop will break, and returns
// them.
func (d *Daemon) drain(force context.Context) []devUser {
	d.stopping.Store(true)
	defer d.drained.Store(true)
	users := d.holders.allUsers()
	if len(users) == 0 {
		return nil
	}
	d.log.Warn("stopping: waiting for the users of the devices to let go; nothing new opens (send the signal again, or use --shutdown-timeout, to force the stop and break them)",
		"users", len(users), "holders", describeUsers(users))
	logTick := time.NewTicker(drainLogEvery)
	defer logTick.Stop()
	for {
		changed := d.userEvents.wait()
		if users = d.holders.allUsers(); len(users) == 0 {
			d.log.Info("stopping: the last user let go")
			return nil
		}
		select {
		case <-changed:
		case <-time.After(250 * time.Millisecond): // DAX unmaps are not announced
		case <-logTick.C:
			d.log.Warn("stopping: still in use", "users", len(users), "holders", describeUsers(users))
		case <-force.Done():
			users = d.holders.allUsers()
			for _, u := range users {
				d.log.Error("stopping by force: this user loses its device", "device", u.device, "user", u.who)
			}
			return users
		}
	}
}

// userSignal is a broadcast: wait returns a channel that notify closes.
type userSignal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *userSignal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *userSignal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
