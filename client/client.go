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
// Programs that may see the volume's table change (or its removal) use
// the memory through Mapping.Access, which the daemon can recall: the
// library waits for the accesses under way, unmaps, and maps again on the
// next Access. A program that keeps the Bytes slice sets
// MapOptions.OnRecall; without it the mapping refuses recalls, and the
// change is refused.
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
	"sync/atomic"
	"time"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Client is a session with the daemon. Its methods are safe for concurrent
// use; requests are answered one at a time. A reader goroutine takes the
// daemon's packets: answers go to the request waiting for them, recalls to
// the mapping they name.
type Client struct {
	mu      sync.Mutex // one request at a time
	sendMu  sync.Mutex // one packet at a time (requests and recall answers)
	conn    *net.UnixConn
	nextID  atomic.Uint64
	answers chan answer   // the reader's non-recall packets
	dead    chan struct{} // closed when the reader stops
	readErr error         // why it stopped; set before dead closes

	mapsMu sync.Mutex
	maps   map[uint64]*Mapping // live mappings by ID, for recalls
	closed bool
}

type answer struct {
	msg wire.SessionMsg
	fds []int
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
	conn, err := d.DialContext(ctx, "unixpacket", socket)
	if err != nil {
		return nil, fmt.Errorf("daxsnap: connect to %s: %w (is the daemon running?)", socket, err)
	}
	c := &Client{conn: conn.(*net.UnixConn), answers: make(chan answer, 1), dead: make(chan struct{}), maps: map[uint64]*Mapping{}}
	go c.read()
	return c, nil
}

// read takes every packet from the daemon until the connection ends.
func (c *Client) read() {
	buf := make([]byte, wire.MaxSessionPacket)
	defer close(c.dead)
	for {
		m, fds, err := wire.RecvSession(c.conn, buf)
		if err != nil {
			c.readErr = err
			return
		}
		if m.Op == wire.OpRecall {
			closeFDs(fds)
			go c.recall(m)
			continue
		}
		select {
		case c.answers <- answer{m, fds}:
		case <-time.After(10 * time.Second):
			// Nobody waits (an answer to a request given up on): drop it.
			closeFDs(fds)
		}
	}
}

// Close ends the session: the daemon releases every mapping of it (the
// memory stays mapped in this process, unprotected: close mappings first).
func (c *Client) Close() error {
	c.mapsMu.Lock()
	if c.closed {
		c.mapsMu.Unlock()
		return nil
	}
	c.closed = true
	c.mapsMu.Unlock()
	err := c.conn.Close()
	<-c.dead
	return err
}

func (c *Client) isClosed() bool {
	c.mapsMu.Lock()
	defer c.mapsMu.Unlock()
	return c.closed
}

// send sends one packet.
func (c *Client) send(m wire.SessionMsg, fds ...int) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return wire.SendSession(c.conn, m, fds...)
}

// exchange sends m with fds and waits for the answer, honouring ctx. c.mu held.
func (c *Client) exchange(ctx context.Context, m wire.SessionMsg, fds ...int) (wire.SessionMsg, []int, error) {
	if c.isClosed() {
		return wire.SessionMsg{}, nil, errors.New("daxsnap: client is closed")
	}
	if err := c.send(m, fds...); err != nil {
		return wire.SessionMsg{}, nil, c.fail(ctx, err)
	}
	select {
	case a := <-c.answers:
		if a.msg.ID != m.ID && a.msg.Op != wire.OpError {
			closeFDs(a.fds)
			return wire.SessionMsg{}, nil, fmt.Errorf("daxsnap: protocol error: answer %q for request %d, want %d", a.msg.Op, a.msg.ID, m.ID)
		}
		return a.msg, a.fds, nil
	case <-c.dead:
		return wire.SessionMsg{}, nil, c.fail(ctx, c.readErr)
	case <-ctx.Done():
		return wire.SessionMsg{}, nil, c.fail(ctx, ctx.Err())
	}
}

// fail reports a failed exchange; the session cannot continue after one
// (the answer may still come), so it is closed.
func (c *Client) fail(ctx context.Context, err error) error {
	c.mapsMu.Lock()
	c.closed = true
	c.mapsMu.Unlock()
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
