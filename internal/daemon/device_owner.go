package daemon

import (
	"context"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// SetOwner changes a device's owner, group or mode in place, as chown and
// chmod of its node would (daxsnap set): what req leaves out stays. The
// new owner is recorded and decides the next map, NBD open and FUSE open;
// what is already open stays open, as with a file.
func (d deviceService) SetOwner(ctx context.Context, name string, req wire.SetOwner) (wire.Info, error) {
	op := "set " + name
	var dev *dm.Device
	err := d.mutate("set", name, func(got *dm.Device) error {
		old := d.devs.owner(got)
		uid, gid, mode := &old.UID, &old.GID, req.Mode
		if req.UID != nil {
			uid = req.UID
		}
		if req.GID != nil {
			gid = req.GID
		}
		if mode == "" {
			mode = access.FormatMode(old.Mode)
		}
		o, err := pmem.ParseOwner(op, uid, gid, mode)
		if err != nil {
			return err
		}
		d.devs.setOwner(got, o)
		dev = got
		d.log.Info("device owner changed", "device", name, "from", old.String(), "to", o.String())
		return nil
	})
	if err != nil {
		return wire.Info{}, err
	}
	return d.info(dev), nil
}
