package snapshot

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// SetGrowWaitHook calls fn whenever an allocation of a snapshot of m
// starts waiting for its COW to grow, until t ends.
func SetGrowWaitHook(t testing.TB, m *dm.Manager, fn func()) {
	reg := m.Shared(registryKey{}, newRegistry).(*registry)
	reg.growWaitHook.Store(&fn)
	t.Cleanup(func() { reg.growWaitHook.Store(nil) })
}
