package daemon

import (
	"github.com/daxsnap/daxsnap/internal/dm"
)

// liveDeps maps every device to the devices its live and inactive
// tables name, as dm has them now.
func (d *Daemon) liveDeps() map[string][]string {
	deps := map[string][]string{}
	for _, dev := range d.mgr.List() {
		deps[dev.Name()] = d.deviceRefs(dev)
	}
	return deps
}

// deviceRefs lists what dev's tables name, including a recorded table
// kept while the device serves an `error` table in its place.
func (d *Daemon) deviceRefs(dev *dm.Device) []string {
	var text string
	for _, slot := range []dm.Slot{dm.Live, dm.Inactive} {
		t, _ := dev.Table(slot)
		text += t
	}
	text += d.notes.get(dev.Name()).keptLive
	return mapperRefs(text)
}

// checkRefs refuses a table for name that names name itself or a device
// that (through its own tables) names name: block I/O would loop.
// graphMu must be held until the table is loaded.
func (d *Daemon) checkRefs(name, table string) error {
	deps := d.liveDeps()
	for _, ref := range mapperRefs(table) {
		if ref == name {
			return errorf(dm.ErrInvalidTable, "%s: the table maps %s%s, the device itself: map another device", name, MapperPrefix, ref)
		}
		if reaches(deps, ref, name) {
			return errorf(dm.ErrInvalidTable, "%s: the table maps %s%s, whose own tables map %s: a device cannot sit under itself; map another device",
				name, MapperPrefix, ref, name)
		}
	}
	return nil
}

// users lists the devices whose tables name name.
func (d *Daemon) users(name string) []string {
	var out []string
	for dev, refs := range d.liveDeps() {
		for _, r := range refs {
			if r == name {
				out = append(out, dev)
			}
		}
	}
	return out
}
