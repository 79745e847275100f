package daemon

import (
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// The memory regions are internal/pmem's; the daemon hands it what it
// needs (pmemHost) and serves its verbs on the API.

// RegionSubdir is the directory regions go in, inside the memory file system.
const RegionSubdir = pmem.Subdir

// PmemCreate makes a memory region: a file reserved on tmpfs or hugetlbfs.
func (d *Daemon) PmemCreate(req wire.PmemCreate) (wire.Pmem, error) { return d.regions.Create(req) }

// PmemList lists the regions.
func (d *Daemon) PmemList() ([]wire.Pmem, error) { return d.regions.List() }

// PmemGet describes one region.
func (d *Daemon) PmemGet(name string) (wire.Pmem, error) { return d.regions.Get(name) }

// PmemRemove deletes a region no table uses.
func (d *Daemon) PmemRemove(name string) error { return d.regions.Remove(name) }

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
