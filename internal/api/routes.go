package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

func (s *Server) routes(metrics http.Handler) {
	m := s.mux
	m.HandleFunc("GET /v1/version", s.version)
	m.HandleFunc("GET /v1/targets", s.targets)

	m.HandleFunc("GET /v1/pmem", s.pmemList)
	m.HandleFunc("POST /v1/pmem", s.pmemCreate)
	m.HandleFunc("GET /v1/pmem/{name}", s.pmemGet)
	m.HandleFunc("DELETE /v1/pmem/{name}", s.pmemRemove)

	m.HandleFunc("GET /v1/devices", s.devices)
	m.HandleFunc("POST /v1/devices", s.create)
	m.HandleFunc("GET /v1/devices/{name}", s.info)
	m.HandleFunc("DELETE /v1/devices/{name}", s.remove)
	m.HandleFunc("POST /v1/devices/{name}/load", s.load)
	m.HandleFunc("POST /v1/devices/{name}/suspend", s.suspend)
	m.HandleFunc("POST /v1/devices/{name}/resume", s.nameOnly(s.svc.Resume))
	m.HandleFunc("POST /v1/devices/{name}/clear", s.nameOnly(s.svc.Clear))
	m.HandleFunc("POST /v1/devices/{name}/wipe_table", s.nameOnly(s.svc.WipeTable))
	m.HandleFunc("POST /v1/devices/{name}/rename", s.rename)
	m.HandleFunc("POST /v1/devices/{name}/message", s.message)
	m.HandleFunc("GET /v1/devices/{name}/table", s.text(s.svc.Table))
	m.HandleFunc("GET /v1/devices/{name}/status", s.text(s.svc.Status))
	m.HandleFunc("GET /v1/devices/{name}/data", s.readData)
	m.HandleFunc("PUT /v1/devices/{name}/data", s.writeData)
	m.HandleFunc("POST /v1/devices/{name}/disconnect", s.disconnect)
	m.HandleFunc("POST /v1/devices/{name}/owner", s.setOwner)

	m.HandleFunc("GET /v1/devices/{name}/checkpoint", s.checkpointGet)
	m.HandleFunc("PUT /v1/devices/{name}/checkpoint", s.checkpointEnable)
	m.HandleFunc("POST /v1/devices/{name}/checkpoint", s.checkpointNow)
	m.HandleFunc("DELETE /v1/devices/{name}/checkpoint", s.checkpointDisable)

	m.HandleFunc("GET /v1/snapshots", s.snapshots)
	m.HandleFunc("POST /v1/snapshots", s.snapshotCreate)
	m.HandleFunc("GET /v1/snapshots/{name}", s.snapshot)
	m.HandleFunc("DELETE /v1/snapshots/{name}", s.snapshotRemove)
	m.HandleFunc("POST /v1/snapshots/{name}/merge", s.snapshotMerge)
	m.HandleFunc("POST /v1/snapshots/{name}/extend", s.snapshotExtend)
	m.HandleFunc("GET /v1/snapshots/{name}/diff", s.snapshotDiff)
	m.HandleFunc("GET /v1/sessions", s.sessions)

	if metrics != nil {
		m.Handle("GET /metrics", metrics)
	}
}

// noRoute answers a request no pattern takes: 405 if the path exists
// with another method, 404 otherwise, both as JSON.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = method
		if _, pattern := s.mux.Handler(probe); pattern != "" {
			allowed = append(allowed, method)
		}
	}
	if len(allowed) == 0 {
		writeError(w, fmt.Errorf("%w: no API route %s %s: see GET /v1/version, /v1/devices, /v1/snapshots, /v1/pmem, /v1/targets",
			dm.ErrNotFound, r.Method, r.URL.Path))
		return
	}
	slices.Sort(allowed)
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, wire.ErrorBody{Code: wire.CodeMethod,
		Error: fmt.Sprintf("%s %s: method not allowed: use %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))})
}
