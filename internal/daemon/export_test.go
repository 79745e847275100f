package daemon

// SetFaultHook makes the snapshot verbs fail the step fn fails (fn
// returns an error for a step name), until the returned function resets it.
func SetFaultHook(fn func(step string) error) (reset func()) {
	faultHook.Store(&fn)
	return func() { faultHook.Store(nil) }
}
