// Package client maps daxsnap DAX volumes into the calling process: the
// program loads and stores to the volume's memory with no daemon in the
// data path, and the volume's snapshots stay exact point-in-time images
// while it does (the daemon copies a chunk before the first store to it
// after a snapshot, caught by userfaultfd write-protect).
//
//	c, err := client.Dial(ctx, "/var/lib/daxsnap/dax.sock")
//	m, err := c.Map(ctx, "vol", client.MapOptions{Length: 1 << 20, Write: true})
//	copy(m.Bytes(), data)
//	err = m.Persist(0, len(data))
//	m.Close()
//
// A mapping is one contiguous []byte even when the volume is striped or
// made of several lines. It is not inherited by forked children
// (MADV_DONTFORK): a child touching it gets SIGSEGV. Do not madvise
// (MADV_REMOVE, MADV_DONTNEED) or mremap it.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Client is a session with the daemon. Its methods are safe for concurrent
// use; requests are answered one at a time.
type Client struct {
	mu     sync.Mutex // one request at a time; guards buf, nextID, closed
	conn   *net.UnixConn
	buf    []byte
	nextID uint64
	closed bool
}

// Error is a request the daemon refused: Code is one of internal/wire's
// Code constants ("not_supported", "not_found", ...).
type Error struct {
	Op      string
	Device  string
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("daxsnap %s %s: %s", e.Op, e.Device, e.Message)
}

// Dial opens a session on the daemon's session socket (<state>/dax.sock).
func Dial(ctx context.Context, socket string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", socket)
	if err != nil {
		return nil, fmt.Errorf("daxsnap: connect to %s: %w (is the daemon running?)", socket, err)
	}
	return &Client{conn: c.(*net.UnixConn), buf: make([]byte, wire.MaxSessionPacket)}, nil
}

// Close ends the session: the daemon releases every mapping of it (the
// memory stays mapped in this process, unprotected: close mappings first).
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.conn.Close()
}

// exchange sends m with fds and reads the answer, honouring ctx. c.mu held.
func (c *Client) exchange(ctx context.Context, m wire.SessionMsg, fds ...int) (wire.SessionMsg, []int, error) {
	if c.closed {
		return wire.SessionMsg{}, nil, errors.New("daxsnap: client is closed")
	}
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
	} else {
		c.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := wire.SendSession(c.conn, m, fds...); err != nil {
		return wire.SessionMsg{}, nil, c.ctxErr(ctx, err)
	}
	r, rfds, err := wire.RecvSession(c.conn, c.buf)
	if err != nil {
		return wire.SessionMsg{}, nil, c.ctxErr(ctx, err)
	}
	if r.ID != m.ID && r.Op != wire.OpError {
		closeFDs(rfds)
		return wire.SessionMsg{}, nil, fmt.Errorf("daxsnap: protocol error: answer %q for request %d, want %d", r.Op, r.ID, m.ID)
	}
	return r, rfds, nil
}

// ctxErr reports a failed exchange; the session cannot continue after one
// (the answer may still come), so it is closed.
func (c *Client) ctxErr(ctx context.Context, err error) error {
	c.closed = true
	c.conn.Close()
	if ctx.Err() != nil {
		return fmt.Errorf("daxsnap: %w (session closed)", ctx.Err())
	}
	return fmt.Errorf("daxsnap: session: %w", err)
}

func refused(op, device string, r wire.SessionMsg) error {
	if r.Error == nil {
		return &Error{Op: op, Device: device, Code: wire.CodeInternal, Message: fmt.Sprintf("unexpected answer %q", r.Op)}
	}
	return &Error{Op: op, Device: device, Code: r.Error.Code, Message: r.Error.Error}
}
