package daemon

import (
	"slices"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// MapperPrefix is how a table names another mapped device.
const MapperPrefix = dm.MapperPrefix

// users lists, sorted, the devices whose tables map name: those whose
// tables opened it (dm's holders of it), and those serving an `error`
// table in place of a recorded table that names it (see note.keptLive),
// which will open it at the next start.
func (hs *holders) users(name string) []string {
	out := hs.devs.keptNaming(name)
	if dev, err := hs.mgr.Get(name); err == nil {
		out = append(out, deviceNames(hs.mgr.Above(dev))...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func deviceNames(devs []*dm.Device) []string {
	out := make([]string, 0, len(devs))
	for _, dev := range devs {
		out = append(out, dev.Name())
	}
	return out
}
