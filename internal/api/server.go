package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// Options configure the API server.
type Options struct {
	// Metrics, if not nil, is served at GET /metrics (Prometheus).
	Metrics http.Handler
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger
	// OwnerUID may change state besides root; default os.Getuid().
	OwnerUID *int
	// Limits bound the connections of clients (zero fields: DefaultLimits).
	Limits Limits
}

// Server serves the API to connections accepted by its caller.
type Server struct {
	svc   Service
	log   *slog.Logger
	owner int
	lim   Limits
	mux   *http.ServeMux
	http  *http.Server
}

// NewServer returns a server for svc. Serve it with Serve.
func NewServer(svc Service, o Options) *Server {
	s := &Server{svc: svc, log: o.Logger, owner: os.Getuid(), mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if o.OwnerUID != nil {
		s.owner = *o.OwnerUID
	}
	s.lim = o.Limits.withDefaults()
	s.routes(o.Metrics)
	s.http = &http.Server{
		Handler:           s,
		ConnContext:       withPeer,
		ReadHeaderTimeout: s.lim.ReadHeaderTimeout,
		ReadTimeout:       s.lim.ReadTimeout,
		IdleTimeout:       s.lim.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s
}

// Serve accepts connections on l until Shutdown, within the server's
// Limits; it returns http.ErrServerClosed after a shutdown.
func (s *Server) Serve(l net.Listener) error {
	return s.http.Serve(&limitListener{Listener: l, s: s, max: s.lim.MaxConns})
}

// Shutdown stops accepting and waits for in-flight requests (until ctx ends).
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// ServeHTTP authorizes, routes and logs one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	peer, hasPeer := peerFrom(r.Context())
	if err := s.authorize(r.Method, peer, hasPeer); err != nil {
		writeError(rec, err)
	} else if _, pattern := s.mux.Handler(r); pattern == "" {
		s.noRoute(rec, r)
	} else {
		s.mux.ServeHTTP(rec, r)
	}
	level := slog.LevelDebug
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		level = slog.LevelInfo
	}
	s.log.Log(r.Context(), level, "api request", "method", r.Method, "path", r.URL.Path,
		"uid", peer.UID, "pid", peer.PID, "status", rec.status, "duration", time.Since(start))
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
