package daemon

import (
	"github.com/daxsnap/daxsnap/internal/dm"
)

// MapperPrefix is how a table names another mapped device.
const MapperPrefix = dm.MapperPrefix

// users lists, sorted, the devices whose tables map name (dm's holders of
// it: the tables that opened it).
func (d *Daemon) users(name string) []string {
	dev, err := d.mgr.Get(name)
	if err != nil {
		return nil
	}
	return deviceNames(d.mgr.Above(dev))
}

func deviceNames(devs []*dm.Device) []string {
	out := make([]string, 0, len(devs))
	for _, dev := range devs {
		out = append(out, dev.Name())
	}
	return out
}
