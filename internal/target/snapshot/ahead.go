package snapshot

import (
	"log/slog"
	"sync"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// cowAhead keeps the COW memory just past the store's allocations
// populated, in the background, so that a copy-on-write (on the DAX fault
// path above all) does not pay for allocating each page it fills: on
// tmpfs a cold page costs 1–3 µs per 4 KiB, as much as the rest of the
// fault (a write(2) into a hole costs 8 µs, into an allocated page 2.5 µs,
// on the development VM; copyRun writes a tmpfs COW so). Stores allocate COW chunks in increasing order, so the window
// follows the highest chunk used.
type cowAhead struct {
	dev    backing.Populater
	size   int64
	window int64
	log    *slog.Logger

	mu   sync.Mutex
	upTo int64 // populated, or being populated, below this offset
	busy bool
	wg   sync.WaitGroup
}

// aheadWindow is the least the background population runs ahead.
const aheadWindow = 4 << 20

// newCowAhead returns nil when cow is not memory that can be populated.
func newCowAhead(cow backing.Device, chunkBytes int64, log *slog.Logger) *cowAhead {
	p, ok := cow.(backing.Populater)
	if !ok || cow.ReadOnly() {
		return nil
	}
	return &cowAhead{dev: p, size: cow.Size(), window: max(aheadWindow, 16*chunkBytes), log: log}
}

// used says the store has filled the COW device up to end: once end comes
// within half a window of what is populated, the next window is populated
// in the background.
func (a *cowAhead) used(end int64) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy || a.upTo >= a.size || end+a.window/2 <= a.upTo {
		return
	}
	from := max(a.upTo, end)
	to := min(from+a.window, a.size)
	a.upTo, a.busy = to, true
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.dev.Populate(from, to-from); err != nil {
			// Only speed is lost: the copies fault the pages in themselves.
			a.log.Debug("populating COW memory ahead failed", "offset", from, "length", to-from, "err", err)
		}
		a.mu.Lock()
		a.busy = false
		a.mu.Unlock()
	}()
}

// grew takes in a COW device that grew to size bytes: the window may
// follow the allocations into the new part.
func (a *cowAhead) grew(size int64) {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.size = max(a.size, size)
	a.mu.Unlock()
}

// wait waits for the population under way, before the device closes.
func (a *cowAhead) wait() {
	if a != nil {
		a.wg.Wait()
	}
}
