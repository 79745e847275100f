package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// Options tunes a Server; the zero value is usable.
type Options struct {
	// Logger receives connection and protocol events; nil means slog.Default().
	Logger *slog.Logger
	// MaxInFlight bounds the bytes one connection may have in flight
	// (payloads plus a fixed charge per queued request). When reached,
	// the server stops reading that connection's requests until some
	// complete. Default 64 MiB.
	MaxInFlight int64
	// HandshakeTimeout bounds option negotiation. Default 30 s.
	HandshakeTimeout time.Duration
	// MaxBuffered bounds the write payload bytes all connections
	// together hold in buffers, from the request header until the
	// backend has taken them. A reader that would pass it waits
	// (backpressure). Default 256 MiB.
	MaxBuffered int64
	// PayloadTimeout bounds how long a client may take to send a write
	// payload once its request header arrived; one that takes longer is
	// disconnected, so a stalled client cannot hold buffer space.
	// Default 30 s.
	PayloadTimeout time.Duration
}

const (
	defaultMaxInFlight      = 64 << 20
	defaultHandshakeTimeout = 30 * time.Second
	defaultMaxBuffered      = 256 << 20
	defaultPayloadTimeout   = 30 * time.Second
)

// Server serves exports over NBD on any number of listeners.
type Server struct {
	exports Exports
	opts    Options
	log     *slog.Logger

	closing atomic.Bool
	nextID  atomic.Uint64
	mu      sync.Mutex
	lns     map[net.Listener]struct{}
	conns   map[*conn]struct{}
	active  sync.WaitGroup // one per live connection

	bufMu    sync.Mutex
	bufRoom  sync.Cond // signalled when buffered drops, or on Shutdown
	buffered int64     // write payload bytes charged (MaxBuffered)
	peak     int64     // the most buffered has been

	stats Stats // stats.go
}

// NewServer returns a server for exports.
func NewServer(exports Exports, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = defaultMaxInFlight
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = defaultHandshakeTimeout
	}
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = defaultMaxBuffered
	}
	if opts.PayloadTimeout <= 0 {
		opts.PayloadTimeout = defaultPayloadTimeout
	}
	s := &Server{
		exports: exports,
		opts:    opts,
		log:     opts.Logger,
		lns:     make(map[net.Listener]struct{}),
		conns:   make(map[*conn]struct{}),
	}
	s.bufRoom.L = &s.bufMu
	return s
}

// Buffered reports the write payload bytes buffered now, and the most
// there have been since the server started; never more than
// Options.MaxBuffered.
func (s *Server) Buffered() (now, peak int64) {
	s.bufMu.Lock()
	defer s.bufMu.Unlock()
	return s.buffered, s.peak
}

// chargeBuffer charges n bytes (at most MaxBuffered) to the server-wide
// buffer budget, waiting while it is spent; false if the server shut
// down meanwhile. It returns what it charged, for releaseBuffer.
func (s *Server) chargeBuffer(n int64) (int64, bool) {
	n = min(n, s.opts.MaxBuffered)
	s.bufMu.Lock()
	defer s.bufMu.Unlock()
	for s.buffered+n > s.opts.MaxBuffered {
		if s.closing.Load() {
			return 0, false
		}
		s.bufRoom.Wait()
	}
	s.buffered += n
	s.peak = max(s.peak, s.buffered)
	return n, true
}

// bufferFree reports whether n bytes may be charged without waiting.
func (s *Server) bufferFree(n int64) bool {
	s.bufMu.Lock()
	defer s.bufMu.Unlock()
	return s.buffered+min(n, s.opts.MaxBuffered) <= s.opts.MaxBuffered
}

func (s *Server) releaseBuffer(n int64) {
	if n == 0 {
		return
	}
	s.bufMu.Lock()
	s.buffered -= n
	s.bufMu.Unlock()
	s.bufRoom.Broadcast()
}

// Serve accepts connections on l (TCP or unix) until Shutdown, and then
// returns ErrServerClosed. Other accept errors are returned as they are;
// temporary ones are retried with a back-off. Serve closes l.
func (s *Server) Serve(l net.Listener) error { return s.serve(l, nil) }

// ServeTLS is Serve for a listener whose clients must negotiate TLS
// (NBD_OPT_STARTTLS) with conf before anything else: every other option
// gets NBD_REP_ERR_TLS_REQD until they do, as the spec's forced-TLS
// server does. conf should verify client certificates
// (tls.RequireAndVerifyClientCert) if exports decide by them.
func (s *Server) ServeTLS(l net.Listener, conf *tls.Config) error {
	if conf == nil {
		l.Close()
		return errors.New("nbd: ServeTLS without a TLS configuration")
	}
	// Full-size records from the start: replies are bulk data, and the
	// records of one flush leave together (corkedConn) anyway.
	conf = conf.Clone()
	conf.DynamicRecordSizingDisabled = true
	return s.serve(l, conf)
}

func (s *Server) serve(l net.Listener, conf *tls.Config) error {
	defer l.Close()
	if !s.track(l) {
		return ErrServerClosed
	}
	defer s.untrack(l)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd: accept failed; retrying", "addr", l.Addr().String(), "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true) // the spec asks both ends to disable Nagle
		}
		c := newConn(s, nc, conf)
		if !s.addConn(c) {
			_ = nc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

// isTemporary reports accept errors worth retrying (EMFILE, ECONNABORTED...).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Shutdown stops accepting, refuses further options and requests with
// NBD_REP_ERR_SHUTDOWN / NBD_ESHUTDOWN, lets requests already being served
// finish and their replies go out, then closes every connection. If ctx
// ends first, the remaining connections are closed at once and ctx's
// error is returned; requests still inside a backend finish on their own.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	for l := range s.lns {
		_ = l.Close()
	}
	for c := range s.conns {
		c.interrupt()
	}
	s.mu.Unlock()
	s.bufMu.Lock()
	s.bufRoom.Broadcast() // readers waiting for buffer space give up
	s.bufMu.Unlock()

	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			_ = c.raw.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// Disconnect closes every connection that has entered transmission on
// export name and returns how many. Requests in flight finish (their
// replies are lost) and each export is released as the connection
// ends, soon after, not by the time Disconnect returns.
func (s *Server) Disconnect(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if p := c.export.Load(); p != nil && *p == name {
			c.log.Info("nbd: disconnecting the client, as asked")
			_ = c.raw.Close()
			n++
		}
	}
	return n
}

func (s *Server) track(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.lns[l] = struct{}{}
	return true
}

func (s *Server) untrack(l net.Listener) {
	s.mu.Lock()
	delete(s.lns, l)
	s.mu.Unlock()
}

func (s *Server) addConn(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.active.Add(1)
	s.stats.ConnsOpen.Add(1)
	s.stats.ConnsTotal.Add(1)
	return true
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.stats.ConnsOpen.Add(-1)
	s.active.Done()
}
