package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/daxsnap/daxsnap/internal/export/nbd"
)

// exportServer exports every device with a live table over NBD, under
// its name, on TCP (Config.NBDAddr) and <state>/nbd.sock.
type exportServer struct {
	srv *nbd.Server
	lns []net.Listener
}

func contextNow() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func (d *Daemon) startExports() (*exportServer, error) {
	e := &exportServer{srv: nbd.NewServer(exportSet{d}, nbd.Options{Logger: d.log.With("component", "nbd")})}
	if d.cfg.NBDAddr != "" {
		l, err := net.Listen("tcp", d.cfg.NBDAddr)
		if err != nil {
			return nil, fmt.Errorf("listen for NBD on %s: %w: pick another --nbd-addr (or \"\" for none)", d.cfg.NBDAddr, err)
		}
		e.lns = append(e.lns, l)
	}
	if !d.cfg.NoNBDUnix {
		l, err := listenUnix(filepath.Join(d.cfg.StateDir, NBDSocketName))
		if err != nil {
			e.closeListeners()
			return nil, err
		}
		e.lns = append(e.lns, l)
	}
	for _, l := range e.lns {
		d.serve("NBD on "+l.Addr().String(), func() error { return e.srv.Serve(l) }, nbd.ErrServerClosed)
	}
	return e, nil
}

func (e *exportServer) closeListeners() {
	for _, l := range e.lns {
		l.Close()
	}
}

func (e *exportServer) addrs() []net.Addr {
	if e == nil {
		return nil
	}
	var out []net.Addr
	for _, l := range e.lns {
		out = append(out, l.Addr())
	}
	return out
}

// shutdown stops the NBD server: in-flight requests finish, then every
// connection closes (at once if ctx ends first).
func (e *exportServer) shutdown(ctx context.Context) error {
	if e == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil && !errors.Is(err, nbd.ErrServerClosed) {
		return err
	}
	return nil
}

// exportSet is the daemon's devices as nbd.Exports.
type exportSet struct{ d *Daemon }

// Open opens device name for one connection; it counts in the device's
// open count until the connection lets go.
func (s exportSet) Open(name string) (*nbd.Export, error) {
	d := s.d
	if name == "" {
		return nil, errors.New("no default export: name a daxsnap device (`daxsnap ls` lists them)")
	}
	dev, err := d.mgr.Get(name)
	if err != nil {
		return nil, fmt.Errorf("no daxsnap device %q: `daxsnap ls` lists them", name)
	}
	in := dev.Info()
	if !in.LiveTable {
		return nil, fmt.Errorf("daxsnap device %q has no live table: load one and resume it", name)
	}
	if err := dev.Open(); err != nil {
		return nil, fmt.Errorf("daxsnap device %q: %v", name, err)
	}
	return &nbd.Export{
		Name:        name,
		Description: fmt.Sprintf("daxsnap device %s (%s)", name, in.LiveCaps),
		Backend:     d.metrics.wrap(name, dev),
		ReadOnly:    in.ReadOnly,
		Release:     func() { d.closeDevice(dev) },
	}, nil
}

// List names every device with a live table.
func (s exportSet) List() []nbd.ExportInfo {
	var out []nbd.ExportInfo
	for _, dev := range s.d.mgr.List() {
		if in := dev.Info(); in.LiveTable {
			out = append(out, nbd.ExportInfo{Name: in.Name, Description: "daxsnap device " + in.Name})
		}
	}
	return out
}
