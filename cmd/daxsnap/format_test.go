package main

import (
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that every state dmsetup info can show is worded as dmsetup
// words it, values at column 20, and that daxsnap's note follows.
func TestFormatInfo(t *testing.T) {
	var b strings.Builder
	formatInfo(&b, wire.Info{Name: "x", Suspended: true, ReadOnly: true, DeferredRemove: true,
		InactiveTable: true, OpenCount: 2, EventNr: 7, Capabilities: "none", FixedCaps: "dax",
		Note: "Its table did not load.", UID: 1000, GID: 6, Mode: "0660", Major: 254, Minor: 3, ReadAhead: 256})
	// The kernel's lines in its order (no Read Ahead without a live
	// table, as dmsetup), then daxsnap's.
	golden(t, "info", b.String(), `Name:              x
State:             SUSPENDED (READ-ONLY) (DEFERRED REMOVE)
Tables present:    INACTIVE
Open count:        2
Event number:      7
Major, minor:      254, 3
Number of targets: 0
Capabilities:      none (fixed: dax)
Owner:             uid 1000, gid 6, mode 0660
Note:              Its table did not load.

`)
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if len(line) < 20 || line[18] != ' ' || line[19] == ' ' {
			t.Errorf("value not at column 20: %q", line)
		}
	}
}

// Ensure that table text is printed as is for one device, prefixed per
// line for several, and that a device without a table prints a blank.
func TestFormatText(t *testing.T) {
	var b strings.Builder
	formatText(&b, wire.Text{Name: "a", Text: "0 8 zero \n8 8 error \n"}, namedEach)
	formatText(&b, wire.Text{Name: "b"}, namedEach)
	formatText(&b, wire.Text{Name: "c", Text: "0 8 zero \n"}, asIs)
	formatText(&b, wire.Text{Name: "d"}, asIs)
	golden(t, "text", b.String(), "a: 0 8 zero \na: 8 8 error \nb: \n0 8 zero \n\n")
}

func TestFormatLsTargets(t *testing.T) {
	var b strings.Builder
	formatLs(&b, nil, lsPlain)
	formatLs(&b, []wire.Info{{Name: "a", Major: 254}, {Name: "b", Major: 254, Minor: 1}}, lsPlain)
	formatLs(&b, []wire.Info{{Name: "b", Major: 254, Minor: 1}}, lsTarget)
	formatTargets(&b, []wire.Target{{Name: "snapshot-origin", Version: [3]int{1, 9, 0}}, {Name: "a-very-long-target-name", Version: [3]int{1, 0, 0}}})
	golden(t, "ls+targets", b.String(), "No devices found\na\t(254:0)\nb\t(254:1)\nb\t(254, 1)\nsnapshot-origin  v1.9.0\na-very-long-target-name v1.0.0\n")
}
