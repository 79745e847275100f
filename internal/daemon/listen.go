package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/daxsnap/daxsnap/internal/api"
)

// maxSocketPath is sun_path's size less the terminating NUL.
const maxSocketPath = 107

// listen mounts the FUSE export and starts the DAX session server, then
// opens the control socket and the NBD listeners and starts serving
// them: a client that reaches the control socket finds the mount and the
// sessions in place.
func (d *Daemon) listen() error {
	met, err := listenMetrics(d.cfg.MetricsAddr, d.metrics.handler())
	if err != nil {
		return err
	}
	d.exports = newExports(d)
	d.exports.startFUSE()
	// The DAX session server first: the API's session and audit handlers
	// read it, so it must be in place before the control socket serves.
	if err := d.sessions.start(); err != nil {
		d.exports.stopFUSE()
		met.shutdown(contextNow())
		return err
	}
	ctl, err := listenUnix(d.SocketPath(), 0o600)
	if err != nil {
		d.sessions.stop()
		d.exports.stopFUSE()
		met.shutdown(contextNow())
		return err
	}
	d.api = api.NewServer(d.Service(), api.Options{Metrics: d.metrics.handler(), Logger: d.log.With("component", "api"), Limits: d.cfg.ControlLimits})
	d.serve("control API", func() error { return d.api.Serve(ctl) }, http.ErrServerClosed)
	if err := d.exports.startNBD(); err != nil {
		d.sessions.stop()
		d.exports.stopFUSE()
		met.shutdown(contextNow())
		d.api.Shutdown(contextNow())
		os.Remove(d.SocketPath())
		return err
	}
	d.metricsHTTP = met
	met.start(d)
	return nil
}

// serve runs fn in the background; an error other than done is reported.
func (d *Daemon) serve(what string, fn func() error, done error) {
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		if err := fn(); err != nil && !errors.Is(err, done) {
			select {
			case d.errs <- fmt.Errorf("%s stopped: %w", what, err):
			default:
			}
		}
	}()
}

// listenUnix listens on path with mode, replacing a stale socket (the
// caller holds the state lock, so no live daemon owns it).
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes, over the %d a unix socket allows: use a shorter --state (or --runtime-dir) directory", path, len(path), maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s %04o: %w", path, mode, err)
	}
	return l, nil
}
