package snapshots

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Snapshot autoextend, as LVM's dmeventd does it (lvm.conf's
// snapshot_autoextend_threshold and _percent): the snapshot target raises
// a device event when its COW usage reaches the threshold (the
// `autoextend P` message arms it), a watcher waiting on the device's
// events grows the COW file by the percentage, and the target takes the
// new space in. Until it has, an allocation that finds the COW full waits
// for it rather than invalidating the snapshot.

// autoPolicy is an autoextend policy; the zero value is off.
type autoPolicy struct{ threshold, percent int }

func (p autoPolicy) on() bool { return p.threshold > 0 && p.threshold < 100 }

// defaultAutoextendPercent is LVM's default snapshot_autoextend_percent.
const defaultAutoextendPercent = 20

// checkAutoextend validates a policy as given (0 is "not given").
func checkAutoextend(what string, threshold, percent int) (autoPolicy, error) {
	switch {
	case threshold == 0 && percent == 0:
		return autoPolicy{}, nil
	case threshold == 0:
		return autoPolicy{}, errorf(dm.ErrInvalidArgument, "%s: an autoextend percent without a threshold: give the threshold too (e.g. 70)", what)
	case threshold < 50 || threshold > 100:
		return autoPolicy{}, errorf(dm.ErrInvalidArgument, "%s: autoextend threshold %d: give 50 to 99 percent full, or 100 for off (as LVM's snapshot_autoextend_threshold)", what, threshold)
	case percent < 0 || percent > 1000:
		return autoPolicy{}, errorf(dm.ErrInvalidArgument, "%s: autoextend percent %d: give 1 to 1000 (percent of the COW's size to add)", what, percent)
	case percent == 0:
		percent = defaultAutoextendPercent
	}
	return autoPolicy{threshold, percent}, nil
}

// autoextenders holds the snapshots' own policies and their watchers.
type autoextenders struct {
	mu       sync.Mutex
	own      map[*dm.Device]autoPolicy
	watching map[*dm.Device]bool
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

func newAutoextenders() *autoextenders {
	ctx, cancel := context.WithCancel(context.Background())
	return &autoextenders{own: map[*dm.Device]autoPolicy{}, watching: map[*dm.Device]bool{}, ctx: ctx, cancel: cancel}
}

func (a *autoextenders) setOwn(dev *dm.Device, p autoPolicy) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p == (autoPolicy{}) {
		delete(a.own, dev)
		return
	}
	a.own[dev] = p
}

func (a *autoextenders) ownOf(dev *dm.Device) (autoPolicy, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.own[dev]
	return p, ok
}

func (a *autoextenders) forget(dev *dm.Device) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.own, dev)
}

// stop ends every watcher.
func (a *autoextenders) stop() {
	a.cancel()
	a.wg.Wait()
}

// policyOf is the policy in force for dev: its own, else the daemon's.
func (mg *Manager) policyOf(dev *dm.Device) autoPolicy {
	if p, ok := mg.autoext.ownOf(dev); ok {
		return p
	}
	return mg.defaultAutoextend
}

// RecordAutoextend is dev's own policy as the state file keeps it.
func (mg *Manager) RecordAutoextend(dev *dm.Device) *state.Autoextend {
	p, ok := mg.autoext.ownOf(dev)
	if !ok {
		return nil
	}
	return &state.Autoextend{Threshold: p.threshold, Percent: p.percent}
}

// RestoreAutoextend takes a snapshot's recorded policy back.
func (mg *Manager) RestoreAutoextend(dev *dm.Device, rec state.Device) {
	if rec.Autoextend == nil {
		return
	}
	p, err := checkAutoextend("device "+rec.Name, rec.Autoextend.Threshold, rec.Autoextend.Percent)
	if err != nil {
		mg.log.Error("recorded autoextend policy is not valid; the daemon's applies", "device", rec.Name, "err", err)
		return
	}
	mg.autoext.setOwn(dev, p)
}

// armAutoextend tells snapshot dev's target its threshold and makes sure
// a watcher runs while the policy is on.
func (mg *Manager) armAutoextend(dev *dm.Device) {
	s, ok := mg.snapshotOf(dev)
	if !ok || s.degraded {
		return
	}
	p := mg.policyOf(dev)
	pct := 0
	if p.on() {
		pct = p.threshold
	}
	if _, err := dev.Message(0, []string{"autoextend", strconv.Itoa(pct)}); err != nil {
		mg.log.Warn("snapshot autoextend not armed", "snapshot", dev.Name(), "err", err)
		return
	}
	if !p.on() {
		return
	}
	a := mg.autoext
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.watching[dev] || a.ctx.Err() != nil {
		return
	}
	a.watching[dev] = true
	a.wg.Add(1)
	go mg.watchCOW(dev)
}

// ArmAutoextend arms every snapshot (at start).
func (mg *Manager) ArmAutoextend() {
	for _, s := range mg.snapshots() {
		mg.armAutoextend(s.dev)
	}
}

// watchCOW waits on snapshot dev's events and extends its COW whenever
// usage has reached the threshold, until dev is gone, is no longer an
// active snapshot with autoextend on, or the daemon stops.
func (mg *Manager) watchCOW(dev *dm.Device) {
	a := mg.autoext
	defer a.wg.Done()
	defer func() {
		a.mu.Lock()
		delete(a.watching, dev)
		a.mu.Unlock()
	}()
	over := false
	for {
		nr := dev.Info().EventNr
		if got, err := mg.devs.Get(dev.Name()); err != nil || got != dev {
			return
		}
		s, ok := mg.snapshotOf(dev)
		p := mg.policyOf(dev)
		if !ok || s.degraded || !p.on() {
			return
		}
		u := usageOf(dev)
		if u.state != wire.SnapshotActive {
			return // invalid or overflowed: nothing to extend any more
		}
		if u.total > 0 && u.allocated*100 >= u.total*uint64(p.threshold) {
			if !over {
				over = true
				mg.metrics.cowThreshold.WithLabelValues(dev.Name()).Inc()
				mg.log.Info("snapshot COW reached its autoextend threshold", "snapshot", dev.Name(),
					"allocated_sectors", u.allocated, "total_sectors", u.total, "threshold", p.threshold)
			}
			if err := mg.autoextend(s, p); errors.Is(err, errFullCopy) {
				return
			} else if err != nil {
				if got, gerr := mg.devs.Get(dev.Name()); gerr != nil || got != dev {
					return // removed meanwhile
				}
				mg.log.Error("snapshot autoextend failed: the snapshot is invalidated if its COW fills up; extend it by hand (`daxsnap snapshot extend`)",
					"snapshot", dev.Name(), "err", err)
				dev.Message(0, []string{"autoextend", "0"}) // no write waits for an extension that will not come
				return
			}
			continue
		}
		over = false
		if _, err := dev.WaitEvent(a.ctx, nr); err != nil {
			return
		}
	}
}

// autoextend grows s's COW file by p.percent of its size and has the
// snapshot take the space in. It takes no device lock: growing the file
// is safe at any time, and a write waiting for the space reads the COW's
// size again itself.
func (mg *Manager) autoextend(s snapView, p autoPolicy) error {
	op := "snapshot autoextend " + s.name
	cur, err := mg.extendableCOW(op, s)
	if err != nil {
		return err
	}
	full := fullCOWSize(int64(s.line.size.Bytes()), s.line.Chunk, s.line.Store)
	if cur >= full {
		// It can never fill up: nothing left to watch.
		_, err := s.dev.Message(0, []string{"autoextend", "0"})
		return errors.Join(err, errFullCopy)
	}
	cb := s.line.Chunk.Bytes()
	size := min((cur+max(cur*int64(p.percent)/100, cb)+cb-1)/cb*cb, full)
	if err := growFile(s.line.COW, size); err != nil {
		return fmt.Errorf("%s: grow COW %s to %d bytes: %w", op, s.line.COW, size, err)
	}
	if _, err := s.dev.Message(0, []string{"grow"}); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	mg.metrics.cowAutoextends.WithLabelValues(s.name).Inc()
	mg.log.Info("snapshot COW autoextended", "snapshot", s.name, "cow", s.line.COW, "from", cur, "to", size, "percent", p.percent)
	return nil
}

var errFullCopy = errors.New("the COW holds a full copy of the origin: it cannot fill up")
