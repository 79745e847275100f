package apiclient

import (
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

func (c *Client) Sessions() ([]wire.DAXSession, error) {
	return get[[]wire.DAXSession](c, "/v1/sessions", nil)
}
