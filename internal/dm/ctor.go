package dm

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// CtorContext is what a target constructor gets besides its arguments: its
// place in the table and a way to open devices (the kernel's dm_target and
// dm_get_device). Devices opened here are known to the core, which derives
// the table's capabilities from them and releases them with the table.
type CtorContext struct {
	Device   string // mapped device name, for messages
	Start    Sector // first sector of the target in the mapped device
	Len      Sector // length of the target in sectors
	ReadOnly bool   // the table is loaded read-only

	pool     *DevicePool
	owner    *Device // the device whose table this is (nil: none)
	devs     []*DeviceRef
	event    func()
	stackErr *StackError // the last mapped device OpenDevice could not open
}

// TriggerEvent bumps the mapped device's event number (the kernel's
// dm_table_event), waking `dmsetup wait`: targets call it when their status
// changes on its own, as when a snapshot is invalidated.
func (c *CtorContext) TriggerEvent() {
	if c.event != nil {
		c.event()
	}
}

// Shared returns the value stored under key for every target built on the
// same device pool, that is every table of one Manager, creating it with
// create on first use. It is where a target type keeps what the kernel
// keeps module-wide (dm-snap.c's origin and exception-store hashes):
// per Manager here, so two Managers in one process (two daemons) never
// see each other's targets. key should be a value of an unexported type
// of the target's package, as with context.WithValue.
func (c *CtorContext) Shared(key any, create func() any) any {
	return c.pool.sharedValue(key, create)
}

// DeviceRef is a backing device as one table line refers to it.
type DeviceRef struct {
	Name string // as written in the table; see TableName
	backing.Device
	Start, Len Sector // the sectors of the device the target uses
}

// TableName is the device's name as Status(StatusTable) prints it: as
// written in the table, except that a mapped device is /dev/mapper/NAME
// with its name now. Tables refer to mapped devices by identity, as the
// kernel's do (by dev_t), so a renamed one keeps working and prints its
// new name.
func (r *DeviceRef) TableName() string {
	if s, ok := r.Device.(*stacked); ok {
		return s.Path()
	}
	return r.Name
}

// NewCtorContext builds a context for constructing targets outside a table
// (tests, tools). Devices are opened through pool.
func NewCtorContext(pool *DevicePool, device string, start, length Sector, mode Mode) *CtorContext {
	return &CtorContext{Device: device, Start: start, Len: length, ReadOnly: mode == ReadOnly, pool: pool}
}

// OpenDevice opens the device called name (a path, or major:minor of a
// block device) and checks that it holds sectors [start, start+length).
func (c *CtorContext) OpenDevice(name string, start, length Sector) (*DeviceRef, error) {
	return c.openDevice(name, start, length, backing.Options{ReadOnly: c.ReadOnly})
}

// OpenDeviceWritable is OpenDevice for a device the target writes even
// in a read-only table: a snapshot's COW, which takes the origin's old
// data whatever the snapshot device's mode (lvcreate -s -p r; the
// kernel's read-only table does not stop its target writing the COW).
func (c *CtorContext) OpenDeviceWritable(name string, start, length Sector) (*DeviceRef, error) {
	return c.openDevice(name, start, length, backing.Options{})
}

// OpenDeviceGrowable is OpenDeviceWritable for a device that may grow
// while the table holds it, up to growLimit bytes (a snapshot's COW,
// which snapshot extend grows): a memory file is mapped with room for
// that growth (backing.Options.GrowLimit). A device the pool holds
// already keeps the room it was opened with.
func (c *CtorContext) OpenDeviceGrowable(name string, start, length Sector, growLimit int64) (*DeviceRef, error) {
	return c.openDevice(name, start, length, backing.Options{GrowLimit: growLimit})
}

func (c *CtorContext) openDevice(name string, start, length Sector, opts backing.Options) (*DeviceRef, error) {
	if start > MaxSectors || length > MaxSectors-start {
		return nil, fmt.Errorf("device %s: sectors %d+%d overflow", name, start, length)
	}
	dev, err := c.pool.get(name, opts, c.ownerKey())
	if err != nil {
		if se := (*StackError)(nil); errors.As(err, &se) {
			c.stackErr = se
		}
		return nil, err
	}
	size := dev.Size() / SectorSize
	if Sector(size) < start+length {
		c.pool.put(dev, c.ownerKey())
		return nil, fmt.Errorf("device %s has %d sectors (%d bytes), too small for sectors %d..%d that this line maps",
			name, size, dev.Size(), start, start+length)
	}
	if lbs := dev.LogicalBlockSize(); lbs > SectorSize {
		per := Sector(lbs / SectorSize)
		if start%per != 0 || length%per != 0 {
			c.pool.put(dev, c.ownerKey())
			return nil, fmt.Errorf("device %s has %d-byte logical blocks: start %d and length %d must be multiples of %d sectors",
				name, lbs, start, length, per)
		}
	}
	ref := &DeviceRef{Name: name, Device: dev, Start: start, Len: length}
	c.devs = append(c.devs, ref)
	return ref, nil
}

// ownerKey is c's owner as the pool counts it: a nil *Device is nil.
func (c *CtorContext) ownerKey() any {
	if c.owner == nil {
		return nil
	}
	return c.owner
}

// Devices lists the devices opened so far (iterate_devices).
func (c *CtorContext) Devices() []*DeviceRef { return c.devs }

// Release puts back every device opened through c.
func (c *CtorContext) Release() {
	for _, d := range c.devs {
		c.pool.put(d.Device, c.ownerKey())
	}
	c.devs = nil
}
