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
	p, err := s.svc.ReadData(r.PathValue("name"), off, n)
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
	replyEmpty(w, s.svc.WriteData(r.PathValue("name"), off, p))
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
	if n > MaxDataLength {
		return 0, 0, fmt.Errorf("%w: length %d exceeds %d bytes per request: read in pieces", dm.ErrInvalidArgument, n, MaxDataLength)
	}
	return off, n, nil
}
