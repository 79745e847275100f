package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// metricsServer serves /metrics on a TCP address (serve --metrics-addr)
// for Prometheus, which cannot scrape the control socket. It serves
// nothing else: the API stays on the root-only socket.
type metricsServer struct {
	l       net.Listener
	srv     *http.Server
	started bool
}

// listenMetrics listens on addr; "" is none (a nil server).
func listenMetrics(addr string, h http.Handler) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w: give --metrics-addr a free HOST:PORT (\"\" for none)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return &metricsServer{l: l, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}}, nil
}

// addr is where it listens; nil when off.
func (m *metricsServer) addr() net.Addr {
	if m == nil {
		return nil
	}
	return m.l.Addr()
}

// start serves in the background through d.serve.
func (m *metricsServer) start(d *Daemon) {
	if m == nil {
		return
	}
	m.started = true
	d.serve("metrics", func() error { return m.srv.Serve(m.l) }, http.ErrServerClosed)
}

// shutdown stops it; a server never started just closes its listener.
func (m *metricsServer) shutdown(ctx context.Context) error {
	if m == nil {
		return nil
	}
	if !m.started {
		return m.l.Close()
	}
	return m.srv.Shutdown(ctx)
}

// MetricsAddr is where /metrics is served over TCP (--metrics-addr), nil
// when it is not.
func (d *Daemon) MetricsAddr() net.Addr { return d.metricsHTTP.addr() }
