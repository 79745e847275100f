package api

import (
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// readData answers GET /v1/devices/{name}/data?offset=&length= with the
// bytes, as application/octet-stream.
func (s *Server) readData(w http.ResponseWriter, r *http.Request) {
	off, n, err := dataRange(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.authorizeRead(r); err != nil {
		writeError(w, err)
		return
	}
	p, err := s.svc.ReadData(r.Context(), r.PathValue("name"), off, n)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(p)))
	w.Write(p)
}

// writeData writes the body of PUT /v1/devices/{name}/data?offset= at offset.
func (s *Server) writeData(w http.ResponseWriter, r *http.Request) {
	off, err := int64Param(r, "offset", 0)
	if err != nil {
		writeError(w, err)
		return
	}
	p, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxDataLength))
	if err != nil {
		writeError(w, fmt.Errorf("%w: read data for %s: %v (at most %d bytes per request)", dm.ErrInvalidArgument, r.URL.Path, err, MaxDataLength))
		return
	}
	replyEmpty(w, s.svc.WriteData(r.Context(), r.PathValue("name"), off, p))
}

// DataAuthorizer, if a Service implements it, decides who may read a
// device's data through the control API, by the device's owner and
// mode. A Service without it lets only root and the server's owner read
// data: "anyone may read" covers state, never the bytes of a device.
type DataAuthorizer interface {
	AuthorizeRead(name string, p Peer) error
}

// authorizeRead applies the data rule to a GET of /v1/devices/{name}/data.
func (s *Server) authorizeRead(r *http.Request) error {
	name := r.PathValue("name")
	p, known := peerFrom(r.Context())
	if !known {
		return fmt.Errorf("%w: reading %s's data needs the caller's credentials, which only the unix socket carries: connect through it",
			ErrPermission, name)
	}
	if p.UID == 0 || p.UID == s.owner {
		return nil
	}
	if a, ok := s.svc.(DataAuthorizer); ok {
		return a.AuthorizeRead(name, p)
	}
	return fmt.Errorf("%w: uid %d (pid %d) may not read %s's data: only root or uid %d, which runs the daemon, may",
		ErrPermission, p.UID, p.PID, name, s.owner)
}

func dataRange(r *http.Request) (off, n int64, err error) {
	if off, err = int64Param(r, "offset", 0); err != nil {
		return 0, 0, err
	}
	if !r.URL.Query().Has("length") {
		return 0, 0, fmt.Errorf("%w: %s needs ?length=BYTES (at most %d)", dm.ErrInvalidArgument, r.URL.Path, MaxDataLength)
	}
	if n, err = int64Param(r, "length", 0); err != nil {
		return 0, 0, err
	}
	if err := CheckData("read", r.PathValue("name"), off, n); err != nil {
		return 0, 0, err
	}
	return off, n, nil
}
