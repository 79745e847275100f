package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
	"github.com/daxsnap/daxsnap/internal/export/nbd"
	"github.com/daxsnap/daxsnap/internal/snapshots"
)

// exports serves the devices outside the control API: over NBD, under
// their names, on TCP (Config.NBDAddr) and <runtime>/nbd.sock, and as
// files on the FUSE mount (fuse.go). auth decides who may use what.
type exports struct {
	cfg     Config
	log     *slog.Logger
	mgr     *dm.Manager
	devs    *devStates
	metrics *ioMetrics
	auth    *authz
	host    exportHost
	snaps   *snapshots.Manager // the dirty bitmaps' diffs (nbdmeta.go)

	srv *nbd.Server // nil until startNBD
	lns []net.Listener

	fuse      *fusefs.Server // devices as files; nil when off
	fuseFiles string         // where the kernel sees the files
}

// doorHost is what the doors to the devices (exports, DAX sessions)
// need of the daemon's lifecycle.
type doorHost interface {
	// refuseWhileStopping refuses op once a stop has begun.
	refuseWhileStopping(op string) error
	// serve runs fn in the background; an error other than done is reported.
	serve(what string, fn func() error, done error)
}

// exportHost is what the exports need of the daemon's lifecycle.
type exportHost interface {
	doorHost
	// hold opens dev for holder h until release.
	hold(dev *dm.Device, h dm.Holder) (release func() error, err error)
}

func newExports(d *Daemon) *exports {
	return &exports{cfg: d.cfg, log: d.log, mgr: d.mgr, devs: d.devs, metrics: d.metrics, auth: d.authz, host: d, snaps: d.snaps}
}

func contextNow() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// startNBD opens the NBD listeners and serves them.
func (e *exports) startNBD() error {
	srv := nbd.NewServer(exportSet{e}, nbd.Options{Logger: e.log.With("component", "nbd")})
	var lns []net.Listener
	var tlsConf *tls.Config
	if e.cfg.NBDTLSAuthz != "" {
		if e.cfg.NBDTLSCreds == "" {
			return errors.New("--tls-authz maps TLS client certificates to users: it needs --tls-creds")
		}
		m, err := loadAuthz(e.cfg.NBDTLSAuthz)
		if err != nil {
			return err
		}
		e.auth.tlsAuthz = m
	}
	if e.cfg.NBDAddr != "" {
		l, conf, err := e.listenNBDTCP()
		if err != nil {
			return err
		}
		lns, tlsConf = append(lns, l), conf
	} else if e.cfg.NBDTLSCreds != "" || e.cfg.NBDInsecure {
		return errors.New("--tls-creds and --nbd-insecure are for NBD on TCP: give --nbd-addr too")
	}
	if !e.cfg.NoNBDUnix {
		// Anyone may connect: every export is authorized by SO_PEERCRED.
		l, err := listenUnix(filepath.Join(e.cfg.RuntimeDir, NBDSocketName), 0o666)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return err
		}
		lns = append(lns, l)
	}
	e.srv, e.lns = srv, lns
	e.metrics.reg.MustRegister(nbdCollector{srv.Stats()})
	for _, l := range e.lns {
		serve := func() error { return e.srv.Serve(l) }
		if _, tcp := l.(*net.TCPListener); tcp && tlsConf != nil {
			serve = func() error { return e.srv.ServeTLS(l, tlsConf) }
		}
		e.host.serve("NBD on "+l.Addr().String(), serve, nbd.ErrServerClosed)
	}
	return nil
}

func (e *exports) addrs() []net.Addr {
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
func (e *exports) shutdown(ctx context.Context) error {
	if e == nil || e.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil && !errors.Is(err, nbd.ErrServerClosed) {
		return err
	}
	return nil
}

// disconnectNBD closes the NBD connections on device name and returns
// how many.
func (e *exports) disconnectNBD(name string) int {
	if e == nil || e.srv == nil {
		return 0
	}
	return e.srv.Disconnect(name)
}

// exportSet is the daemon's devices as nbd.Exports.
type exportSet struct{ e *exports }

// Open opens device name for one connection, as far as the client may
// use it (nbdauth.go); it counts in the device's open count, as an NBD
// holder, until the connection lets go. A stopping daemon opens nothing
// new.
func (s exportSet) Open(c *nbd.Client, name string) (*nbd.Export, error) {
	e := s.e
	if err := e.host.refuseWhileStopping("NBD export " + name); err != nil {
		return nil, err
	}
	if name == "" {
		return nil, errors.New("no default export: name a daxsnap device (`daxsnap ls` lists them)")
	}
	dev, err := e.mgr.Get(name)
	if err != nil {
		return nil, fmt.Errorf("no daxsnap device %q: `daxsnap ls` lists them", name)
	}
	id, err := e.auth.nbdIdentify(c)
	if err != nil {
		return nil, &nbd.RefusedError{Err: err}
	}
	readOnly, err := e.auth.nbdAccess(id, dev)
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
	release, err := e.host.hold(dev, h)
	if err != nil {
		return nil, fmt.Errorf("daxsnap device %q: %v", name, err)
	}
	desc := fmt.Sprintf("daxsnap device %s (%s)", name, in.LiveCaps)
	switch {
	case in.ReadOnly:
	case e.auth.bypassesCOW(name):
		desc += ", read-only: it writes past its origin's snapshots"
	case readOnly:
		desc += ", read-only: its mode lets you read only"
	}
	return &nbd.Export{
		Name:        name,
		Description: desc,
		Backend:     e.metrics.wrap(name, dev),
		ReadOnly:    in.ReadOnly || readOnly,
		Release:     func() { release() },
		Meta:        s.metaOpener(c, name),
	}, nil
}

// List names every device with a live table that c may read.
func (s exportSet) List(c *nbd.Client) []nbd.ExportInfo {
	id, err := s.e.auth.nbdIdentify(c)
	if err != nil {
		return nil
	}
	var out []nbd.ExportInfo
	for _, dev := range s.e.mgr.List() {
		if in := dev.Info(); in.LiveTable {
			if _, err := s.e.auth.nbdAccess(id, dev); err == nil {
				out = append(out, nbd.ExportInfo{Name: in.Name, Description: "daxsnap device " + in.Name})
			}
		}
	}
	return out
}
