package daemon

import (
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/pmem"
)

// The memory regions are internal/pmem's; the daemon hands it what it
// needs (pmemHost) and serves its verbs on the API (pmemService, in
// service.go).

// RegionSubdir is the directory regions go in, inside the memory file system.
const RegionSubdir = pmem.Subdir

// pmemHost is the daemon as the region manager sees it.
type pmemHost struct{ d *Daemon }

var _ pmem.Host = pmemHost{}

// Tables gives each device's live and inactive tables, and the one kept
// while it serves `error`.
func (h pmemHost) Tables() []pmem.Tables {
	var out []pmem.Tables
	for _, dev := range h.d.mgr.List() {
		tables := []string{h.d.devs.note(dev).keptLive}
		for _, slot := range []dm.Slot{dm.Live, dm.Inactive} {
			t, _ := dev.Table(slot)
			tables = append(tables, t)
		}
		out = append(out, pmem.Tables{Device: dev.Name(), Tables: tables})
	}
	return out
}

func (h pmemHost) RefuseWhileStopping(op string) error { return h.d.refuseWhileStopping(op) }
