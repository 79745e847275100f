package snapshot

import (
	"errors"
	"fmt"
	"slices"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// Changed-block tracking reads what the exception stores already record:
// a snapshot's exceptions are exactly the origin chunks first written
// after it was taken (plus the chunks written to the snapshot itself),
// appended in order. The store's commit order survives a restart (Load
// reports it), and the in-memory table keeps the same order (cowState's
// order). So "how many exceptions snapshot A had when snapshot B was
// activated", taken while nothing is being committed to A, names a prefix
// of A's exceptions that stays the same set forever after: the chunks
// that changed between A and B. The snapshot manager records those
// counts (marks) durably; Changes reads a prefix back.

// Tracked is what a live snapshot target says about its exceptions, for
// changed-block tracking.
type Tracked struct {
	// Count is the number of exceptions in the table, in order: a mark.
	Count int
	// ChunkBytes is the chunk size in bytes.
	ChunkBytes int64
	// Transient: store type N, whose exceptions do not survive the
	// table (a daemon restart empties them).
	Transient bool
	// Written: a write reached the snapshot itself since its state was
	// opened (this run of the daemon): its own changes are among its
	// exceptions, and no mark tells them apart.
	Written bool
	// State and Merging are the target's condition (see Usage).
	State   State
	Merging bool
}

// ErrNotTracked is returned for a device whose live table is not one
// snapshot target.
var ErrNotTracked = errors.New("not a snapshot target")

// withLiveSnap calls fn with dev's live snapshot or snapshot-merge
// target while its table can be neither swapped nor closed (fn must not
// call dev's methods). A live table that is not exactly one such line is
// ErrNotTracked; fn may have run then, and its result is to be dropped.
func withLiveSnap(dev *dm.Device, fn func(*snap)) error {
	found, n := false, 0
	dev.LiveTargets(func(_ dm.TableLine, x dm.Target) {
		n++
		if s, ok := x.(*snap); ok && !found {
			found = true
			fn(s)
		}
	})
	if !found || n != 1 {
		return fmt.Errorf("%s: %w (its live table must be exactly one `snapshot` line)", dev.Name(), ErrNotTracked)
	}
	return nil
}

// TrackedOf describes the exceptions of dev's live snapshot target.
func TrackedOf(dev *dm.Device) (Tracked, error) {
	var tr Tracked
	err := withLiveSnap(dev, func(t *snap) {
		s := t.state
		s.mu.RLock()
		n := len(s.order)
		s.mu.RUnlock()
		u := s.usage()
		tr = Tracked{Count: n, ChunkBytes: s.chunkBytes, Transient: !s.storeType.IsPersistent(),
			Written: s.written.Load(), State: u.State, Merging: u.Merging || t.merger != nil}
	})
	if err != nil {
		return Tracked{}, err
	}
	return tr, nil
}

// Changes returns, sorted, the origin chunks of the first n exceptions of
// dev's live snapshot target (all of them if n < 0), and the chunk size
// in bytes. n larger than the table is an error: the exceptions a mark
// counted are gone (a merge took them), so the answer would be short.
func Changes(dev *dm.Device, n int) ([]exstore.Chunk, int64, error) {
	var out []exstore.Chunk
	var cb int64
	have := 0
	err := withLiveSnap(dev, func(t *snap) {
		s := t.state
		cb = s.chunkBytes
		s.mu.RLock()
		defer s.mu.RUnlock()
		have = len(s.order)
		if n < 0 {
			n = have
		}
		if n <= have {
			out = slices.Clone(s.order[:n])
		}
	})
	if err != nil {
		return nil, 0, err
	}
	if n > have {
		return nil, 0, fmt.Errorf("%s: its table has %d exceptions, fewer than the %d a mark counted: some were merged or lost", dev.Name(), have, n)
	}
	slices.Sort(out)
	return out, cb, nil
}

// WriteHook is called before the first write that reaches a snapshot
// itself (not through its origin) in each run, with the COW device as
// the snapshot's table names it. An error fails that write: a write the
// tracking could not record must not happen unrecorded.
type WriteHook func(cow string) error

// SetWriteHook installs fn for the snapshots of m (nil removes it).
func SetWriteHook(m *dm.Manager, fn WriteHook) {
	reg := m.Shared(registryKey{}, newRegistry).(*registry)
	if fn == nil {
		reg.writeHook.Store(nil)
		return
	}
	reg.writeHook.Store(&fn)
}

// noteWrite runs before every write to a snapshot (not a merge target):
// the first one in the state's life calls the write hook.
func (t *snap) noteWrite() error {
	s := t.state
	if s.written.Load() {
		return nil
	}
	if hook := s.reg.writeHook.Load(); hook != nil {
		if err := (*hook)(t.cow.TableName()); err != nil {
			return fmt.Errorf("%w: write to snapshot on %s: recording that the snapshot was written failed: %v", dm.ErrIO, t.cow.Name, err)
		}
	}
	s.written.Store(true)
	return nil
}
