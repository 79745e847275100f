package apiclient

import (
	"context"
	"net/url"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// get decodes a GET reply into a fresh T.
func get[T any](ctx context.Context, c *Client, path string, q url.Values) (T, error) {
	var v T
	_, err := c.do(ctx, "GET", path, q, nil, &v)
	return v, err
}

// post sends in and decodes the reply into a fresh T.
func post[T any](ctx context.Context, c *Client, method, path string, in any) (T, error) {
	var v T
	_, err := c.do(ctx, method, path, nil, in, &v)
	return v, err
}

func (c *Client) Version(ctx context.Context) (wire.Version, error) {
	return get[wire.Version](ctx, c, "/v1/version", nil)
}
func (c *Client) Targets(ctx context.Context) ([]wire.Target, error) {
	return get[[]wire.Target](ctx, c, "/v1/targets", nil)
}
func (c *Client) PmemList(ctx context.Context) ([]wire.Pmem, error) {
	return get[[]wire.Pmem](ctx, c, "/v1/pmem", nil)
}
func (c *Client) Devices(ctx context.Context) ([]wire.Info, error) {
	return get[[]wire.Info](ctx, c, "/v1/devices", nil)
}

// SetOwner changes a device's owner, group or mode (daxsnap set).
func (c *Client) SetOwner(ctx context.Context, name string, req wire.SetOwner) (wire.Info, error) {
	return post[wire.Info](ctx, c, "POST", devPath(name, "owner"), req)
}

// Disconnect closes a device's NBD clients and revokes its open FUSE
// files (daxsnap disconnect).
func (c *Client) Disconnect(ctx context.Context, name string) (wire.Disconnected, error) {
	return post[wire.Disconnected](ctx, c, "POST", "/v1/devices/"+url.PathEscape(name)+"/disconnect", nil)
}

func (c *Client) PmemGet(ctx context.Context, name string) (wire.Pmem, error) {
	return get[wire.Pmem](ctx, c, "/v1/pmem/"+url.PathEscape(name), nil)
}

func (c *Client) PmemCreate(ctx context.Context, req wire.PmemCreate) (wire.Pmem, error) {
	return post[wire.Pmem](ctx, c, "POST", "/v1/pmem", req)
}

func (c *Client) PmemRemove(ctx context.Context, name string) error {
	_, err := c.do(ctx, "DELETE", "/v1/pmem/"+url.PathEscape(name), nil, nil, nil)
	return err
}

func (c *Client) Create(ctx context.Context, req wire.DeviceCreate) (wire.Info, error) {
	return post[wire.Info](ctx, c, "POST", "/v1/devices", req)
}

func (c *Client) Info(ctx context.Context, name string) (wire.Info, error) {
	return get[wire.Info](ctx, c, devPath(name), nil)
}

func (c *Client) Load(ctx context.Context, name string, req wire.Load) error {
	_, err := c.do(ctx, "POST", devPath(name, "load"), nil, req, nil)
	return err
}

func (c *Client) Suspend(ctx context.Context, name string, req wire.Suspend) error {
	_, err := c.do(ctx, "POST", devPath(name, "suspend"), nil, req, nil)
	return err
}

func (c *Client) verb(ctx context.Context, name, verb string) error {
	_, err := c.do(ctx, "POST", devPath(name, verb), nil, nil, nil)
	return err
}

func (c *Client) Resume(ctx context.Context, name string) error { return c.verb(ctx, name, "resume") }
func (c *Client) Clear(ctx context.Context, name string) error  { return c.verb(ctx, name, "clear") }
func (c *Client) WipeTable(ctx context.Context, name string) error {
	return c.verb(ctx, name, "wipe_table")
}

func (c *Client) Remove(ctx context.Context, name string, req wire.Remove) error {
	q := url.Values{}
	for k, v := range flag("force", req.Force) {
		q[k] = v
	}
	for k, v := range flag("deferred", req.Deferred) {
		q[k] = v
	}
	_, err := c.do(ctx, "DELETE", devPath(name), q, nil, nil)
	return err
}

func (c *Client) Rename(ctx context.Context, name string, req wire.Rename) (wire.Info, error) {
	return post[wire.Info](ctx, c, "POST", devPath(name, "rename"), req)
}

func (c *Client) Message(ctx context.Context, name string, req wire.Message) (wire.MessageReply, error) {
	return post[wire.MessageReply](ctx, c, "POST", devPath(name, "message"), req)
}

func (c *Client) Table(ctx context.Context, name string, inactive bool) (wire.Text, error) {
	return get[wire.Text](ctx, c, devPath(name, "table"), flag("inactive", inactive))
}

func (c *Client) Status(ctx context.Context, name string, inactive bool) (wire.Text, error) {
	return get[wire.Text](ctx, c, devPath(name, "status"), flag("inactive", inactive))
}

func (c *Client) ReadData(ctx context.Context, name string, off, n int64) ([]byte, error) {
	return c.do(ctx, "GET", devPath(name, "data"), offsets(off, n), nil, nil)
}

func (c *Client) WriteData(ctx context.Context, name string, off int64, p []byte) error {
	_, err := c.do(ctx, "PUT", devPath(name, "data"), offsets(off, -1), p, nil)
	return err
}
