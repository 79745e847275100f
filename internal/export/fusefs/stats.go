package fusefs

import (
	"sync/atomic"
	"syscall"
)

// opNames are the operations Stats counts, as label values, indexed by op.
var opNames = [...]string{opOpen: "open", opRead: "read", opWrite: "write", opAllocate: "fallocate", opFsync: "fsync"}

// Stats are the mount's counters of file operations on device files,
// kept with atomics for a metrics collector to read (the daemon's
// registers them; this package knows no metrics library).
type Stats struct {
	// Ops, Errors and Bytes are by operation, indexed like Ops():
	// operations served, those that failed, and bytes read or written.
	Ops, Errors, Bytes [len(opNames)]atomic.Uint64
}

// Ops names the operations Stats counts, in its order.
func Ops() []string { return opNames[:] }

// Stats are the mount's counters.
func (m *Server) Stats() *Stats { return &m.x.stats }

// count records one operation o that moved n bytes and answered errno,
// which it returns.
func (st *Stats) count(o op, n int, errno syscall.Errno) syscall.Errno {
	st.Ops[o].Add(1)
	if errno != 0 {
		st.Errors[o].Add(1)
	}
	st.Bytes[o].Add(uint64(n))
	return errno
}
