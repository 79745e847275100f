package api

import (
	"net/http"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// GET /v1/devices/{name}/checkpoint
func (s *Server) checkpointGet(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.CheckpointGet(r.Context(), r.PathValue("name"))
	reply(w, http.StatusOK, v, err)
}

// PUT /v1/devices/{name}/checkpoint
func (s *Server) checkpointEnable(w http.ResponseWriter, r *http.Request) {
	var req wire.CheckpointEnable
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.CheckpointEnable(r.Context(), r.PathValue("name"), req)
	reply(w, http.StatusOK, v, err)
}

// POST /v1/devices/{name}/checkpoint: the reply comes once the checkpoint
// is durable, or when the client goes away (the checkpoint goes on).
func (s *Server) checkpointNow(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.CheckpointNow(r.Context(), r.PathValue("name"))
	reply(w, http.StatusOK, v, err)
}

// DELETE /v1/devices/{name}/checkpoint
func (s *Server) checkpointDisable(w http.ResponseWriter, r *http.Request) {
	replyEmpty(w, s.svc.CheckpointDisable(r.Context(), r.PathValue("name")))
}
