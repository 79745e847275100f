package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
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
	var tlsConf *tls.Config
	if d.cfg.NBDTLSAuthz != "" {
		if d.cfg.NBDTLSCreds == "" {
			return nil, errors.New("--tls-authz maps TLS client certificates to users: it needs --tls-creds")
		}
		m, err := loadAuthz(d.cfg.NBDTLSAuthz)
		if err != nil {
			return nil, err
		}
		d.tlsAuthz = m
	}
	if d.cfg.NBDAddr != "" {
		l, conf, err := d.listenNBDTCP()
		if err != nil {
			return nil, err
		}
		e.lns, tlsConf = append(e.lns, l), conf
	} else if d.cfg.NBDTLSCreds != "" || d.cfg.NBDInsecure {
		return nil, errors.New("--tls-creds and --nbd-insecure are for NBD on TCP: give --nbd-addr too")
	}
	if !d.cfg.NoNBDUnix {
		// Anyone may connect: every export is authorized by SO_PEERCRED.
		l, err := listenUnix(filepath.Join(d.cfg.RuntimeDir, NBDSocketName), 0o666)
		if err != nil {
			e.closeListeners()
			return nil, err
		}
		e.lns = append(e.lns, l)
	}
	for _, l := range e.lns {
		serve := func() error { return e.srv.Serve(l) }
		if _, tcp := l.(*net.TCPListener); tcp && tlsConf != nil {
			serve = func() error { return e.srv.ServeTLS(l, tlsConf) }
		}
		d.serve("NBD on "+l.Addr().String(), serve, nbd.ErrServerClosed)
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

// Open opens device name for one connection, as far as the client may
// use it (nbdauth.go); it counts in the device's open count, as an NBD
// holder, until the connection lets go. A stopping daemon opens nothing
// new.
func (s exportSet) Open(c *nbd.Client, name string) (*nbd.Export, error) {
	d := s.d
	if err := d.refuseWhileStopping("NBD export " + name); err != nil {
		return nil, err
	}
	if name == "" {
		return nil, errors.New("no default export: name a daxsnap device (`daxsnap ls` lists them)")
	}
	dev, err := d.mgr.Get(name)
	if err != nil {
		return nil, fmt.Errorf("no daxsnap device %q: `daxsnap ls` lists them", name)
	}
	id, err := d.nbdIdentify(c)
	if err != nil {
		return nil, &nbd.RefusedError{Err: err}
	}
	readOnly, err := d.nbdAccess(id, dev)
	if err != nil {
		return nil, &nbd.RefusedError{Err: err}
	}
	in := dev.Info()
	if !in.LiveTable {
		return nil, fmt.Errorf("daxsnap device %q has no live table: load one and resume it", name)
	}
	h := dm.Holder{Kind: dm.HolderNBD, Who: id.who + " on " + c.Addr}
	if c.Cred != nil {
		h.PID, h.UID = c.Cred.PID, int(c.Cred.UID)
	}
	release, err := d.hold(dev, h)
	if err != nil {
		return nil, fmt.Errorf("daxsnap device %q: %v", name, err)
	}
	desc := fmt.Sprintf("daxsnap device %s (%s)", name, in.LiveCaps)
	switch {
	case in.ReadOnly:
	case d.bypassesCOW(name):
		desc += ", read-only: it writes past its origin's snapshots"
	case readOnly:
		desc += ", read-only: its mode lets you read only"
	}
	return &nbd.Export{
		Name:        name,
		Description: desc,
		Backend:     d.metrics.wrap(name, dev),
		ReadOnly:    in.ReadOnly || readOnly,
		Release:     func() { release() },
	}, nil
}

// List names every device with a live table that c may read.
func (s exportSet) List(c *nbd.Client) []nbd.ExportInfo {
	id, err := s.d.nbdIdentify(c)
	if err != nil {
		return nil
	}
	var out []nbd.ExportInfo
	for _, dev := range s.d.mgr.List() {
		if in := dev.Info(); in.LiveTable {
			if _, err := s.d.nbdAccess(id, dev); err == nil {
				out = append(out, nbd.ExportInfo{Name: in.Name, Description: "daxsnap device " + in.Name})
			}
		}
	}
	return out
}
