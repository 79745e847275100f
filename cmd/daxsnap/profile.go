package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
)

// profileEnv, set to ADDR (e.g. 127.0.0.1:6060), makes `daxsnap serve`
// serve Go's profiles of the daemon (/debug/pprof/: profile, mutex,
// block, trace, ...) on ADDR, and turns on the mutex and block profiles
// (every event): docs/performance.md profiles the daemon under the
// benchmarks with it (bench/fuse.sh PPROF=ADDR sets it). Other commands
// ignore it, and unset, nothing changes. The listener has no authentication: bind it to loopback.
const profileEnv = "DAXSNAP_PPROF"

// startProfiling serves the profiles if profileEnv asks; it logs why it
// cannot, and the daemon runs on without them.
func startProfiling(log *slog.Logger) {
	addr := os.Getenv(profileEnv)
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn(profileEnv+": no profiles: unset it or give a free loopback address", "addr", addr, "err", err)
		return
	}
	runtime.SetMutexProfileFraction(1)
	runtime.SetBlockProfileRate(1)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	log.Info("serving Go profiles at /debug/pprof/ ("+profileEnv+")", "addr", ln.Addr().String())
	go func() { _ = http.Serve(ln, mux) }()
}
