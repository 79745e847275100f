package daemon

import (
	"errors"
	"fmt"
	"slices"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// quiesce flushes and suspends every device, devices stacked on others
// first, so that no I/O is in flight or admitted afterwards. A device the
// user left suspended cannot be flushed now; the daemon flushed it when
// it was suspended (see Suspend). The suspensions are not recorded: the
// next start brings devices back as the state file says.
func (d *Daemon) quiesce() error {
	deps := d.liveDeps()
	order := dependencyOrder(deps)
	slices.Reverse(order)
	d.held = d.heldDevices(deps)
	var errs []error
	for _, name := range order {
		dev, err := d.mgr.Get(name)
		if err != nil || d.held[name] != "" {
			continue
		}
		in := dev.Info()
		if in.LiveTable && !in.Suspended {
			if err := dev.Flush(); err != nil {
				errs = append(errs, fmt.Errorf("flush %s: %w", name, err))
			}
		}
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
	order := dependencyOrder(d.liveDeps())
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
func (d *Daemon) heldDevices(deps map[string][]string) map[string]string {
	held := map[string]string{}
	for name := range deps {
		dev, err := d.mgr.Get(name)
		if err != nil || !dev.Info().Suspended {
			continue
		}
		for above := range deps {
			if above != name && reaches(deps, above, name) {
				held[above] = name
			}
		}
	}
	for above, below := range held {
		d.log.Warn("device sits on a suspended device: not flushed or closed at shutdown (resume the device below first for a clean stop)",
			"device", above, "suspended", below)
	}
	return held
}
