package api

import (
	"context"
	"net/http"

	"github.com/daxsnap/daxsnap/internal/wire"
)

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Version(r.Context())
	reply(w, http.StatusOK, v, err)
}

func (s *Server) targets(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Targets(r.Context())
	reply(w, http.StatusOK, v, err)
}

func (s *Server) pmemList(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.PmemList(r.Context())
	reply(w, http.StatusOK, v, err)
}

func (s *Server) pmemGet(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.PmemGet(r.Context(), r.PathValue("name"))
	reply(w, http.StatusOK, v, err)
}

func (s *Server) pmemCreate(w http.ResponseWriter, r *http.Request) {
	var req wire.PmemCreate
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.PmemCreate(r.Context(), req)
	reply(w, http.StatusCreated, v, err)
}

func (s *Server) pmemRemove(w http.ResponseWriter, r *http.Request) {
	replyEmpty(w, s.svc.PmemRemove(r.Context(), r.PathValue("name")))
}

func (s *Server) devices(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Devices(r.Context())
	reply(w, http.StatusOK, v, err)
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req wire.DeviceCreate
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.Create(r.Context(), req)
	reply(w, http.StatusCreated, v, err)
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Info(r.Context(), r.PathValue("name"))
	reply(w, http.StatusOK, v, err)
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	var req wire.Remove
	var err error
	if req.Force, err = boolParam(r, "force"); err != nil {
		writeError(w, err)
		return
	}
	if req.Deferred, err = boolParam(r, "deferred"); err != nil {
		writeError(w, err)
		return
	}
	replyEmpty(w, s.svc.Remove(r.Context(), r.PathValue("name"), req))
}

func (s *Server) load(w http.ResponseWriter, r *http.Request) {
	var req wire.Load
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	replyEmpty(w, s.svc.Load(r.Context(), r.PathValue("name"), req))
}

func (s *Server) suspend(w http.ResponseWriter, r *http.Request) {
	var req wire.Suspend
	if err := decode(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	replyEmpty(w, s.svc.Suspend(r.Context(), r.PathValue("name"), req))
}

// nameOnly serves a verb that takes only the device name (resume, clear,
// wipe_table); a body, if any, must be an empty JSON object.
func (s *Server) nameOnly(fn func(context.Context, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct{}
		if err := decode(w, r, &req, false); err != nil {
			writeError(w, err)
			return
		}
		replyEmpty(w, fn(r.Context(), r.PathValue("name")))
	}
}

func (s *Server) rename(w http.ResponseWriter, r *http.Request) {
	var req wire.Rename
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.Rename(r.Context(), r.PathValue("name"), req)
	reply(w, http.StatusOK, v, err)
}

func (s *Server) message(w http.ResponseWriter, r *http.Request) {
	var req wire.Message
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.Message(r.Context(), r.PathValue("name"), req)
	reply(w, http.StatusOK, v, err)
}

// text serves table and status, live or (?inactive=1) inactive.
func (s *Server) text(fn func(context.Context, string, bool) (wire.Text, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		inactive, err := boolParam(r, "inactive")
		if err != nil {
			writeError(w, err)
			return
		}
		v, err := fn(r.Context(), r.PathValue("name"), inactive)
		reply(w, http.StatusOK, v, err)
	}
}
