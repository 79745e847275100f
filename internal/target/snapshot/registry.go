package snapshot

import (
	"sync"
	"sync/atomic"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// registry is the lookup the kernel keeps module-wide in dm-snap.c's
// origin and exception-store hashes: COW states by COW device identity
// (so targets naming one COW share it) and by origin identity (so origin
// writes find every snapshot of their device). There is one per
// dm.Manager (its device pool), handed to targets through their
// constructor context: two daemons in one process never share one.
type registry struct {
	mu       sync.Mutex
	byCOW    map[backing.ID]*cowState
	byOrigin map[backing.ID][]*cowState

	// growWaitHook, if set (tests), is called when an allocation starts
	// waiting for its COW to grow.
	growWaitHook atomic.Pointer[func()]
	// writeHook, if set, is told of the first write to each snapshot
	// itself (SetWriteHook, track.go).
	writeHook atomic.Pointer[WriteHook]
}

// registryKey keys the registry among a Manager's shared values.
type registryKey struct{}

// registryOf returns the registry of the Manager ctx builds a table for.
func registryOf(ctx *dm.CtorContext) *registry {
	return ctx.Shared(registryKey{}, newRegistry).(*registry)
}

func newRegistry() any {
	return &registry{byCOW: map[backing.ID]*cowState{}, byOrigin: map[backing.ID][]*cowState{}}
}

// acquire returns the state of the COW device, creating it with create if
// no target holds it yet; the caller owns one reference.
func (r *registry) acquire(cow backing.ID, create func() (*cowState, error)) (*cowState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.byCOW[cow]; ok {
		s.refs++
		return s, nil
	}
	s, err := create()
	if err != nil {
		return nil, err
	}
	s.refs = 1
	s.reg = r
	r.byCOW[cow] = s
	r.byOrigin[s.originID] = append(r.byOrigin[s.originID], s)
	return s, nil
}

// release drops one reference; the last one unregisters and closes the state.
func (r *registry) release(s *cowState) error {
	r.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last {
		delete(r.byCOW, s.cowID)
		list := r.byOrigin[s.originID]
		for i, x := range list {
			if x == s {
				list = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(r.byOrigin, s.originID)
		} else {
			r.byOrigin[s.originID] = list
		}
	}
	r.mu.Unlock()
	if last {
		return s.close()
	}
	return nil
}

// snapshotsOf lists the states registered for an origin.
func (r *registry) snapshotsOf(origin backing.ID) []*cowState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*cowState(nil), r.byOrigin[origin]...)
}
