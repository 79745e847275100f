package snapshot

import "testing"

// SetGrowWaitHook calls fn whenever an allocation starts waiting for its
// COW to grow, until t ends.
func SetGrowWaitHook(t testing.TB, fn func()) {
	growWaitHook.Store(&fn)
	t.Cleanup(func() { growWaitHook.Store(nil) })
}
