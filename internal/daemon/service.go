package daemon

import (
	"runtime"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/wire"
)

var _ api.Service = (*Daemon)(nil)

// Version reports the daemon's version.
func (d *Daemon) Version() (wire.Version, error) {
	return wire.Version{Version: d.cfg.Version, API: wire.APIVersion, GoVersion: runtime.Version()}, nil
}

// Targets lists the registered target types (dmsetup targets).
func (d *Daemon) Targets() ([]wire.Target, error) {
	out := []wire.Target{}
	for _, tt := range d.reg.Types() {
		out = append(out, wire.Target{Name: tt.Name, Version: tt.Version})
	}
	return out, nil
}
