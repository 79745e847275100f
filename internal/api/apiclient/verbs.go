package apiclient

import (
	"net/url"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// get decodes a GET reply into a fresh T.
func get[T any](c *Client, path string, q url.Values) (T, error) {
	var v T
	_, err := c.do("GET", path, q, nil, &v)
	return v, err
}

// post sends in and decodes the reply into a fresh T.
func post[T any](c *Client, method, path string, in any) (T, error) {
	var v T
	_, err := c.do(method, path, nil, in, &v)
	return v, err
}

func (c *Client) Version() (wire.Version, error)  { return get[wire.Version](c, "/v1/version", nil) }
func (c *Client) Targets() ([]wire.Target, error) { return get[[]wire.Target](c, "/v1/targets", nil) }
func (c *Client) PmemList() ([]wire.Pmem, error)  { return get[[]wire.Pmem](c, "/v1/pmem", nil) }
func (c *Client) Devices() ([]wire.Info, error)   { return get[[]wire.Info](c, "/v1/devices", nil) }

// Disconnect closes a device's NBD clients and revokes its open FUSE
// files (daxsnap disconnect).
func (c *Client) Disconnect(name string) (wire.Disconnected, error) {
	return post[wire.Disconnected](c, "POST", "/v1/devices/"+url.PathEscape(name)+"/disconnect", nil)
}

func (c *Client) PmemGet(name string) (wire.Pmem, error) {
	return get[wire.Pmem](c, "/v1/pmem/"+url.PathEscape(name), nil)
}

func (c *Client) PmemCreate(req wire.PmemCreate) (wire.Pmem, error) {
	return post[wire.Pmem](c, "POST", "/v1/pmem", req)
}

func (c *Client) PmemRemove(name string) error {
	_, err := c.do("DELETE", "/v1/pmem/"+url.PathEscape(name), nil, nil, nil)
	return err
}

func (c *Client) Create(req wire.DeviceCreate) (wire.Info, error) {
	return post[wire.Info](c, "POST", "/v1/devices", req)
}

func (c *Client) Info(name string) (wire.Info, error) { return get[wire.Info](c, devPath(name), nil) }

func (c *Client) Load(name string, req wire.Load) error {
	_, err := c.do("POST", devPath(name, "load"), nil, req, nil)
	return err
}

func (c *Client) Suspend(name string, req wire.Suspend) error {
	_, err := c.do("POST", devPath(name, "suspend"), nil, req, nil)
	return err
}

func (c *Client) verb(name, verb string) error {
	_, err := c.do("POST", devPath(name, verb), nil, nil, nil)
	return err
}

func (c *Client) Resume(name string) error    { return c.verb(name, "resume") }
func (c *Client) Clear(name string) error     { return c.verb(name, "clear") }
func (c *Client) WipeTable(name string) error { return c.verb(name, "wipe_table") }

func (c *Client) Remove(name string, req wire.Remove) error {
	q := url.Values{}
	for k, v := range flag("force", req.Force) {
		q[k] = v
	}
	for k, v := range flag("deferred", req.Deferred) {
		q[k] = v
	}
	_, err := c.do("DELETE", devPath(name), q, nil, nil)
	return err
}

func (c *Client) Rename(name string, req wire.Rename) (wire.Info, error) {
	return post[wire.Info](c, "POST", devPath(name, "rename"), req)
}

func (c *Client) Message(name string, req wire.Message) (wire.MessageReply, error) {
	return post[wire.MessageReply](c, "POST", devPath(name, "message"), req)
}

func (c *Client) Table(name string, inactive bool) (wire.Text, error) {
	return get[wire.Text](c, devPath(name, "table"), flag("inactive", inactive))
}

func (c *Client) Status(name string, inactive bool) (wire.Text, error) {
	return get[wire.Text](c, devPath(name, "status"), flag("inactive", inactive))
}

func (c *Client) ReadData(name string, off, n int64) ([]byte, error) {
	return c.do("GET", devPath(name, "data"), offsets(off, n), nil, nil)
}

func (c *Client) WriteData(name string, off int64, p []byte) error {
	_, err := c.do("PUT", devPath(name, "data"), offsets(off, -1), p, nil)
	return err
}
