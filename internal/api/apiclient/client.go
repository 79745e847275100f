// Package apiclient speaks daxsnap's control API (package api) over a
// daemon's unix socket. Client implements api.Service, so a caller, the
// CLI or a test, can use the daemon in process or across the socket
// alike; errors come back as *api.Error, whose class errors.Is matches.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/api"
)

// Client speaks the API over a daemon's unix socket. It implements
// api.Service.
type Client struct {
	socket string
	hc     *http.Client
}

var _ api.Service = (*Client)(nil)

// New returns a client for the daemon listening on socket.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Socket is the path the client connects to.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// ErrUnreachable: no daemon answers on the socket.
var ErrUnreachable = errors.New("daemon unreachable")

// UnreachableError says why the socket could not be reached and what to do.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	if errors.Is(e.Err, syscall.EACCES) || errors.Is(e.Err, syscall.EPERM) {
		return fmt.Sprintf("cannot connect to daxsnap at %s: permission denied: run as root or as the user running `daxsnap serve`", e.Socket)
	}
	return fmt.Sprintf("cannot reach daxsnap at %s: start it with `daxsnap serve` (or point --socket / $DAXSNAP_STATE at a running one)", e.Socket)
}

func (e *UnreachableError) Unwrap() []error { return []error{ErrUnreachable, e.Err} }

// do sends a request with a JSON body (in != nil) or raw bytes, and
// decodes a JSON reply into out (out != nil) or returns the raw body.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in any, out any) ([]byte, error) {
	req, err := newRequest(ctx, method, path, query, in)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read reply: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return nil, replyError(resp.StatusCode, raw)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s %s: decode reply: %w", method, path, err)
		}
	}
	return raw, nil
}

// newRequest builds a request; path is already escaped.
func newRequest(ctx context.Context, method, path string, query url.Values, in any) (*http.Request, error) {
	var body io.Reader
	ctype := ""
	switch v := in.(type) {
	case nil:
	case []byte:
		body, ctype = bytes.NewReader(v), "application/octet-stream"
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	u := "http://daxsnap" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return req, nil
}

func (c *Client) transportError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return &UnreachableError{Socket: c.socket, Err: op.Err}
	}
	return fmt.Errorf("talk to daxsnap at %s: %w", c.socket, err)
}

func replyError(status int, raw []byte) error {
	var body struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if json.Unmarshal(raw, &body) != nil || body.Error == "" {
		body.Error = fmt.Sprintf("daxsnap answered HTTP %d: %s", status, bytes.TrimSpace(raw))
	}
	return &api.Error{Status: status, Code: body.Code, Message: body.Error}
}

func devPath(name string, sub ...string) string {
	p := "/v1/devices/" + url.PathEscape(name)
	for _, s := range sub {
		p += "/" + s
	}
	return p
}

func flag(name string, v bool) url.Values {
	if !v {
		return nil
	}
	return url.Values{name: {"true"}}
}

func offsets(off, n int64) url.Values {
	q := url.Values{"offset": {strconv.FormatInt(off, 10)}}
	if n >= 0 {
		q.Set("length", strconv.FormatInt(n, 10))
	}
	return q
}
