package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// OwnerSetter, if a Service implements it, serves
// POST /v1/devices/{name}/owner: change a device's owner, group or mode
// without recreating it (daxsnap set). Like every change, it needs root
// or the daemon's uid (authorize).
type OwnerSetter interface {
	SetOwner(ctx context.Context, name string, req wire.SetOwner) (wire.Info, error)
}

func (s *Server) setOwner(w http.ResponseWriter, r *http.Request) {
	o, ok := s.svc.(OwnerSetter)
	if !ok {
		writeError(w, fmt.Errorf("%w: this server cannot change a device's owner", dm.ErrNotSupported))
		return
	}
	var req wire.SetOwner
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	v, err := o.SetOwner(r.Context(), r.PathValue("name"), req)
	reply(w, http.StatusOK, v, err)
}
