package api

import (
	"net/http"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// GET /v1/snapshots?origin=NAME
func (s *Server) snapshots(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Snapshots(r.Context(), r.URL.Query().Get("origin"))
	reply(w, http.StatusOK, v, err)
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Snapshot(r.Context(), r.PathValue("name"))
	reply(w, http.StatusOK, v, err)
}

func (s *Server) snapshotCreate(w http.ResponseWriter, r *http.Request) {
	var req wire.SnapshotCreate
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.SnapshotCreate(r.Context(), req)
	reply(w, http.StatusCreated, v, err)
}

func (s *Server) snapshotRemove(w http.ResponseWriter, r *http.Request) {
	replyEmpty(w, s.svc.SnapshotRemove(r.Context(), r.PathValue("name")))
}

// POST /v1/snapshots/{name}/merge; without no_wait the reply comes when
// the merge has finished, or when the client goes away: the request's
// context ends the wait, not the merge.
func (s *Server) snapshotMerge(w http.ResponseWriter, r *http.Request) {
	var req wire.SnapshotMerge
	if err := decode(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.SnapshotMerge(r.Context(), r.PathValue("name"), req)
	reply(w, http.StatusOK, v, err)
}

// POST /v1/snapshots/{name}/extend
func (s *Server) snapshotExtend(w http.ResponseWriter, r *http.Request) {
	var req wire.SnapshotExtend
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.SnapshotExtend(r.Context(), r.PathValue("name"), req)
	reply(w, http.StatusOK, v, err)
}

// GET /v1/sessions
func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Sessions(r.Context())
	reply(w, http.StatusOK, v, err)
}
