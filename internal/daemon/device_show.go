package daemon

import (
	"context"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Message delivers a message to the target covering a sector.
func (d deviceService) Message(ctx context.Context, name string, req wire.Message) (wire.MessageReply, error) {
	dev, err := d.device("message", name)
	if err != nil {
		return wire.MessageReply{}, err
	}
	if req.Sector > uint64(dm.MaxSectors) {
		return wire.MessageReply{}, errorf(dm.ErrInvalidArgument, "message %s: sector %d is beyond any device", name, req.Sector)
	}
	reply, err := dev.Message(dm.Sector(req.Sector), req.Args)
	return wire.MessageReply{Reply: reply}, err
}

// Info describes a device.
func (d deviceService) Info(ctx context.Context, name string) (wire.Info, error) {
	dev, err := d.device("info", name)
	if err != nil {
		return wire.Info{}, err
	}
	return d.info(dev), nil
}

// Devices describes every device, sorted by name.
func (d deviceService) Devices(ctx context.Context) ([]wire.Info, error) {
	out := []wire.Info{}
	for _, dev := range d.mgr.List() {
		out = append(out, d.info(dev))
	}
	return out, nil
}

// Table prints a device's live or inactive table.
func (d deviceService) Table(ctx context.Context, name string, inactive bool) (wire.Text, error) {
	return d.text("table", name, inactive, (*dm.Device).Table)
}

// Status prints a device's live or inactive status.
func (d deviceService) Status(ctx context.Context, name string, inactive bool) (wire.Text, error) {
	return d.text("status", name, inactive, (*dm.Device).Status)
}

func (d *Daemon) text(op, name string, inactive bool, fn func(*dm.Device, dm.Slot) (string, error)) (wire.Text, error) {
	dev, err := d.device(op, name)
	if err != nil {
		return wire.Text{}, err
	}
	slot := dm.Live
	if inactive {
		slot = dm.Inactive
	}
	text, err := fn(dev, slot)
	if err != nil {
		return wire.Text{}, fmt.Errorf("%s %s: %w", op, name, err)
	}
	out := wire.Text{Name: dev.Name(), Inactive: inactive, Text: text, Note: d.devs.note(dev).String()}
	if op == "status" && !inactive {
		out.Durability = d.durability(dev)
	}
	return out, nil
}
