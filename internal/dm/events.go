package dm

import (
	"context"
	"sync"
)

// eventCounter is the device's event number (dmsetup info "Event number",
// dmsetup wait), counted as the kernel's dm_table_event counts: target
// events (a snapshot invalidated, a COW past its autoextend threshold),
// a rename of a device with a live table, the removal. It starts at 0,
// and loads, suspends and resumes leave it alone.
type eventCounter struct {
	mu   sync.Mutex
	nr   uint64
	wake chan struct{}
}

func (e *eventCounter) bump() {
	e.mu.Lock()
	e.nr++
	if e.wake != nil {
		close(e.wake)
		e.wake = nil
	}
	e.mu.Unlock()
}

func (e *eventCounter) current() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nr
}

// wait blocks until the counter passes nr or ctx ends, and returns the
// current number.
func (e *eventCounter) wait(ctx context.Context, nr uint64) (uint64, error) {
	for {
		e.mu.Lock()
		if e.nr > nr {
			n := e.nr
			e.mu.Unlock()
			return n, nil
		}
		if e.wake == nil {
			e.wake = make(chan struct{})
		}
		ch := e.wake
		e.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return e.current(), ctx.Err()
		}
	}
}

// WaitEvent blocks until the device's event number exceeds nr (dmsetup wait).
func (d *Device) WaitEvent(ctx context.Context, nr uint64) (uint64, error) {
	return d.events.wait(ctx, nr)
}
