package apiclient

import (
	"context"
	"net/url"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/wire"
)

var _ api.Differ = (*Client)(nil)

// SnapshotDiff asks which extents changed from snapshot req.From to
// req.To (a newer snapshot of the same origin, or "" for the live
// origin); see wire.SnapshotDiff.
func (c *Client) SnapshotDiff(ctx context.Context, req wire.SnapshotDiffRequest) (wire.SnapshotDiff, error) {
	q := url.Values{}
	if req.To != "" {
		q.Set("to", req.To)
	}
	if req.Full {
		q.Set("full", "true")
	}
	return get[wire.SnapshotDiff](ctx, c, "/v1/snapshots/"+url.PathEscape(req.From)+"/diff", q)
}
