package nbd

import (
	"strings"
	"sync/atomic"
)

// Stats are a server's counters, kept with atomics for a metrics
// collector to read (the daemon's registers them with Prometheus; this
// package knows no metrics library).
type Stats struct {
	// ConnsOpen are the connections being served now, ConnsTotal all
	// that were taken on since the server started.
	ConnsOpen  atomic.Int64
	ConnsTotal atomic.Uint64
	// Ops, Bytes and Errors are by command, indexed like Ops(): requests
	// answered, payload bytes read or written (READ and WRITE), and
	// requests answered with an error (refused as invalid, or failed).
	Ops, Bytes, Errors [len(cmdNames)]atomic.Uint64
}

// Ops names the commands Stats counts, as lower-case label values
// ("read", "write", "flush", "trim", ...), in Stats' order.
func Ops() []string {
	out := make([]string, len(cmdNames))
	for i, n := range cmdNames {
		out[i] = strings.ToLower(n)
	}
	return out
}

// Stats are the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// count records one request of type typ answered, with n payload bytes
// moved or failed.
func (st *Stats) count(typ uint16, n uint32, failed bool) {
	if int(typ) >= len(cmdNames) {
		return // an unknown command: refused, not one of the counted ops
	}
	st.Ops[typ].Add(1)
	switch {
	case failed:
		st.Errors[typ].Add(1)
	case typ == cmdRead || typ == cmdWrite:
		st.Bytes[typ].Add(uint64(n))
	}
}
