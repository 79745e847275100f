package daemon

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// CheckTable builds a table offline, without a daemon, against the real
// devices it names, and reports what it would map and offer; the error is
// the precise reason it would not load. Devices are opened and closed
// again: nothing is written. /dev/mapper names need the daemon and are
// refused.
func CheckTable(text string, readOnly bool) (wire.CheckReport, error) {
	reg := dm.NewRegistry()
	all.Register(reg)
	pool := dm.NewDevicePool(offlineOpen)
	mode := dm.ReadWrite
	if readOnly {
		mode = dm.ReadOnly
	}
	t, err := dm.BuildTable(reg, pool, "check", text, mode)
	if err != nil {
		return wire.CheckReport{}, err
	}
	defer t.Close()
	rep := wire.CheckReport{Sectors: uint64(t.Size()), Capabilities: t.Capabilities().String()}
	for _, l := range t.Lines() {
		line, err := checkLine(reg, pool, l, mode)
		if err != nil {
			return wire.CheckReport{}, err
		}
		rep.Lines = append(rep.Lines, line)
	}
	return rep, nil
}

// checkLine builds one line on its own (moved to sector 0) to learn its
// capabilities and devices.
func checkLine(reg *dm.Registry, pool *dm.DevicePool, l dm.TableLine, mode dm.Mode) (wire.CheckLine, error) {
	alone := dm.TableLine{Start: 0, Len: l.Len, Type: l.Type, Args: l.Args}
	t, err := dm.BuildTable(reg, pool, "check", alone.String(), mode)
	if err != nil {
		return wire.CheckLine{}, fmt.Errorf("line %d: %w", l.Line, err)
	}
	defer t.Close()
	out := wire.CheckLine{Line: l.Line, Start: uint64(l.Start), Length: uint64(l.Len), Type: l.Type,
		Args: l.Args, Capabilities: t.Capabilities().String()}
	for _, d := range t.Devices() {
		out.Devices = append(out.Devices, wire.CheckDevice{Name: d.Name, Kind: d.Kind().String(),
			Size: d.Size(), Capabilities: d.Capabilities().String()})
	}
	return out, nil
}

func offlineOpen(name string, opts backing.Options) (backing.Device, error) {
	if dm.IsStackRef(name) {
		return nil, errors.New(name + " is a daxsnap device, which an offline check cannot open: load the table on the daemon (`daxsnap load`) to check it there")
	}
	return backing.Open(name, opts)
}
