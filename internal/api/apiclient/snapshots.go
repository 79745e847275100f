package apiclient

import (
	"context"
	"net/url"

	"github.com/daxsnap/daxsnap/internal/wire"
)

func snapPath(name string, sub ...string) string {
	p := "/v1/snapshots/" + url.PathEscape(name)
	for _, x := range sub {
		p += "/" + x
	}
	return p
}

func (c *Client) Snapshots(ctx context.Context, origin string) ([]wire.Snapshot, error) {
	var q url.Values
	if origin != "" {
		q = url.Values{"origin": {origin}}
	}
	return get[[]wire.Snapshot](ctx, c, "/v1/snapshots", q)
}

func (c *Client) Snapshot(ctx context.Context, name string) (wire.Snapshot, error) {
	return get[wire.Snapshot](ctx, c, snapPath(name), nil)
}

func (c *Client) SnapshotCreate(ctx context.Context, req wire.SnapshotCreate) (wire.Snapshot, error) {
	return post[wire.Snapshot](ctx, c, "POST", "/v1/snapshots", req)
}

func (c *Client) SnapshotRemove(ctx context.Context, name string) error {
	_, err := c.do(ctx, "DELETE", snapPath(name), nil, nil, nil)
	return err
}

func (c *Client) SnapshotMerge(ctx context.Context, name string, req wire.SnapshotMerge) (wire.Snapshot, error) {
	return post[wire.Snapshot](ctx, c, "POST", snapPath(name, "merge"), req)
}

func (c *Client) SnapshotExtend(ctx context.Context, name string, req wire.SnapshotExtend) (wire.Snapshot, error) {
	return post[wire.Snapshot](ctx, c, "POST", snapPath(name, "extend"), req)
}

func (c *Client) Sessions(ctx context.Context) ([]wire.DAXSession, error) {
	return get[[]wire.DAXSession](ctx, c, "/v1/sessions", nil)
}
