package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Differ, if a Service implements it, serves
// GET /v1/snapshots/{name}/diff?to=TO[&full=1]: the extents that changed
// from snapshot name to TO, a newer snapshot of the same origin, or the
// live origin when TO is empty or the origin's name (changed-block
// tracking; see wire.SnapshotDiff).
type Differ interface {
	SnapshotDiff(ctx context.Context, req wire.SnapshotDiffRequest) (wire.SnapshotDiff, error)
}

func (s *Server) snapshotDiff(w http.ResponseWriter, r *http.Request) {
	d, ok := s.svc.(Differ)
	if !ok {
		writeError(w, fmt.Errorf("%w: this server does not track changed blocks", dm.ErrNotSupported))
		return
	}
	q := r.URL.Query()
	req := wire.SnapshotDiffRequest{From: r.PathValue("name"), To: q.Get("to")}
	if f := q.Get("full"); f != "" {
		full, err := strconv.ParseBool(f)
		if err != nil {
			writeError(w, fmt.Errorf("%w: full=%q: want true or false", dm.ErrInvalidArgument, f))
			return
		}
		req.Full = full
	}
	v, err := d.SnapshotDiff(r.Context(), req)
	reply(w, http.StatusOK, v, err)
}
