package checkpoint

import "time"

// Hooks let tests see into a checkpoint; see testHooks.
type Hooks = testHooks

// StartHooked is Start with h installed.
func StartHooked(cfg Config, h Hooks) (*Volume, error) { return start(cfg, h) }

// SetCloseWait sets how long Close waits for a write under way.
func SetCloseWait(d time.Duration) (restore func()) {
	old := closeWait
	closeWait = d
	return func() { closeWait = old }
}
