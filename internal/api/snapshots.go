package api

import (
	"net/http"
	"net/url"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// GET /v1/snapshots?origin=NAME
func (s *Server) snapshots(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Snapshots(r.URL.Query().Get("origin"))
	reply(w, http.StatusOK, v, err)
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Snapshot(r.PathValue("name"))
	reply(w, http.StatusOK, v, err)
}

func (s *Server) snapshotCreate(w http.ResponseWriter, r *http.Request) {
	var req wire.SnapshotCreate
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.SnapshotCreate(req)
	reply(w, http.StatusCreated, v, err)
}

func (s *Server) snapshotRemove(w http.ResponseWriter, r *http.Request) {
	replyEmpty(w, s.svc.SnapshotRemove(r.PathValue("name")))
}

// POST /v1/snapshots/{name}/merge; without no_wait the reply comes when
// the merge has finished.
func (s *Server) snapshotMerge(w http.ResponseWriter, r *http.Request) {
	var req wire.SnapshotMerge
	if err := decode(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.SnapshotMerge(r.PathValue("name"), req)
	reply(w, http.StatusOK, v, err)
}

// POST /v1/snapshots/{name}/extend
func (s *Server) snapshotExtend(w http.ResponseWriter, r *http.Request) {
	var req wire.SnapshotExtend
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.svc.SnapshotExtend(r.PathValue("name"), req)
	reply(w, http.StatusOK, v, err)
}

func snapPath(name string, sub ...string) string {
	p := "/v1/snapshots/" + url.PathEscape(name)
	for _, x := range sub {
		p += "/" + x
	}
	return p
}

func (c *Client) Snapshots(origin string) ([]wire.Snapshot, error) {
	var q url.Values
	if origin != "" {
		q = url.Values{"origin": {origin}}
	}
	return get[[]wire.Snapshot](c, "/v1/snapshots", q)
}

func (c *Client) Snapshot(name string) (wire.Snapshot, error) {
	return get[wire.Snapshot](c, snapPath(name), nil)
}

func (c *Client) SnapshotCreate(req wire.SnapshotCreate) (wire.Snapshot, error) {
	return post[wire.Snapshot](c, "POST", "/v1/snapshots", req)
}

func (c *Client) SnapshotRemove(name string) error {
	_, err := c.do("DELETE", snapPath(name), nil, nil, nil)
	return err
}

func (c *Client) SnapshotMerge(name string, req wire.SnapshotMerge) (wire.Snapshot, error) {
	return post[wire.Snapshot](c, "POST", snapPath(name, "merge"), req)
}

func (c *Client) SnapshotExtend(name string, req wire.SnapshotExtend) (wire.Snapshot, error) {
	return post[wire.Snapshot](c, "POST", snapPath(name, "extend"), req)
}

// GET /v1/sessions
func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Sessions()
	reply(w, http.StatusOK, v, err)
}

func (c *Client) Sessions() ([]wire.DAXSession, error) {
	return get[[]wire.DAXSession](c, "/v1/sessions", nil)
}
