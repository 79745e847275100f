package backing

import (
	"fmt"
	"runtime/debug"
	"syscall"
)

// guarded runs fn, which touches mapped memory, and turns a memory fault
// into an EIO error. Faults happen when the file under a mapping was
// truncated (SIGBUS beyond EOF) or tmpfs/hugetlbfs has no page left to fill
// a hole; a daemon must report them, not crash.
func guarded(fn func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		r := recover()
		if r == nil {
			return
		}
		fault, ok := r.(interface{ Addr() uintptr })
		if !ok {
			panic(r)
		}
		err = fmt.Errorf("memory fault at %#x (was the file truncated, or its file system out of space or huge pages?): %w",
			fault.Addr(), syscall.EIO)
	}()
	fn()
	return nil
}
