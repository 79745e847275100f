package dm

import (
	"slices"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Dep is one device a table uses (dmsetup deps).
type Dep struct {
	// Mapped is the mapped device, if the table uses one of m's.
	Mapped *Device
	// Path is how the table names it now (DeviceRef.TableName).
	Path string
	// Block is set for a mapped or block device, whose numbers Major and
	// Minor are.
	Block        bool
	Major, Minor uint32
}

// Deps lists the devices d's live table uses, each once, in the kernel's
// order: a table's device list grows at its head (dm_get_device's
// list_add), so the device opened last comes first.
func (d *Device) Deps() []Dep {
	d.ctl.Lock()
	defer d.ctl.Unlock()
	if d.live == nil {
		return nil
	}
	var out []Dep
	seen := map[backing.Device]bool{}
	for _, ref := range d.live.Devices() {
		if seen[ref.Device] {
			continue
		}
		seen[ref.Device] = true
		dep := Dep{Path: ref.TableName()}
		switch dev := ref.Device.(type) {
		case *stacked:
			dep.Mapped, dep.Block, dep.Major, dep.Minor = dev.dev, true, Major, uint32(dev.dev.number)
		default:
			if dev.Kind() == backing.KindBlock {
				rdev := dev.ID().Dev
				dep.Block, dep.Major, dep.Minor = true, unix.Major(rdev), unix.Minor(rdev)
			}
		}
		out = append(out, dep)
	}
	slices.Reverse(out)
	return out
}
