package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Disconnecter, if a Service implements it, serves
// POST /v1/devices/{name}/disconnect: close the device's NBD clients and
// revoke its open FUSE files, so that root can take it back.
type Disconnecter interface {
	Disconnect(ctx context.Context, name string) (wire.Disconnected, error)
}

func (s *Server) disconnect(w http.ResponseWriter, r *http.Request) {
	d, ok := s.svc.(Disconnecter)
	if !ok {
		writeError(w, fmt.Errorf("%w: this server cannot disconnect a device's users", dm.ErrNotSupported))
		return
	}
	v, err := d.Disconnect(r.Context(), r.PathValue("name"))
	reply(w, http.StatusOK, v, err)
}
