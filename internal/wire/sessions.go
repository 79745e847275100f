package wire

import "time"

// DAXSession is a client process that maps devices directly (daxsnap
// sessions, GET /v1/sessions).
type DAXSession struct {
	PID      int          `json:"pid"`
	UID      uint32       `json:"uid"`
	Started  time.Time    `json:"started"`
	Mappings []DAXMapping `json:"mappings"`
	// Problems are the audit's findings: mappings whose pages lack the
	// userfaultfd write-protect flag in the process (smaps "uw").
	Problems []string `json:"problems,omitempty"`
}

// DAXMapping is one mapped range of a device in a session.
type DAXMapping struct {
	Device string `json:"device"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Addr   uint64 `json:"addr"`
	Write  bool   `json:"write"`
	Faults int64  `json:"faults"` // write faults resolved
	Held   int64  `json:"held"`   // faults held by a snapshot's sweep
	// OutlivesDaemon: the client keeps the mapping protected through a
	// daemon stop and hands it to the next daemon; Adopted: this daemon
	// took it over from an earlier one.
	OutlivesDaemon bool `json:"outlives_daemon"`
	Adopted        bool `json:"adopted,omitempty"`
}
