// Package client maps daxsnap DAX volumes into the calling process: the
// program loads and stores to the volume's memory with no daemon in the
// data path, and the volume's snapshots stay exact point-in-time images
// while it does (the daemon copies a chunk before the first store to it
// after a snapshot, caught by userfaultfd write-protect).
//
//	c, err := client.Dial(ctx, "/run/daxsnap/dax.sock")
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
// A request the daemon refuses returns an *Error, which errors.Is
// matches with the value of its reason: ErrBusy, ErrNotFound,
// ErrPermission, ErrNoSpace and the other Err values.
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
//
// When the connection ends (the daemon stopped, was killed or restarts),
// the client dials again until a daemon answers and hands every live
// mapping to it (see Mapping): meanwhile stores to write-protected pages
// wait, other loads and stores go on, and requests wait for the new
// connection (as long as their context allows).
type Client struct {
	socket string
	mu     sync.Mutex // one request at a time; a reconnection holds it while it hands the mappings over
	nextID atomic.Uint64

	linkMu sync.Mutex
	link   *link         // the connection; nil while there is none
	up     chan struct{} // closed while link is set
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the connection keeper returns

	mapsMu sync.Mutex
	maps   map[uint64]*Mapping // live mappings by ID, for recalls and reconnections
	closed bool
	// persists are the Persist groups by device (persist_linux.go).
	persists map[string]*persistGroup

	reconnects atomic.Int64
}

// link is one connection to a daemon.
type link struct {
	conn    *net.UnixConn
	sendMu  sync.Mutex    // one packet at a time (requests and recall answers)
	answers chan answer   // the reader's non-recall packets
	dead    chan struct{} // closed when the reader stops
	err     error         // why it stopped; set before dead closes
}

type answer struct {
	msg wire.SessionMsg
	fds []int
}

// errLost is a request cut short because the connection ended.
var errLost = errors.New("connection to the daemon lost")

// Dial opens a session on the daemon's session socket, RUNTIME-DIR/dax.sock
// (/run/daxsnap/dax.sock for root's daemon, else <state>/dax.sock).
func Dial(ctx context.Context, socket string) (*Client, error) {
	conn, err := dial(ctx, socket)
	if err != nil {
		return nil, fmt.Errorf("daxsnap: connect to %s: %w (is the daemon running?)", socket, err)
	}
	c := &Client{socket: socket, stop: make(chan struct{}), done: make(chan struct{}), maps: map[uint64]*Mapping{}}
	l := c.newLink(conn)
	c.link, c.up = l, make(chan struct{})
	close(c.up)
	go c.keep(l)
	return c, nil
}

func dial(ctx context.Context, socket string) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", socket)
	if err != nil {
		return nil, err
	}
	return conn.(*net.UnixConn), nil
}

func (c *Client) newLink(conn *net.UnixConn) *link {
	l := &link{conn: conn, answers: make(chan answer, 1), dead: make(chan struct{})}
	go c.read(l)
	return l
}

// read takes every packet from the daemon until the connection ends.
func (c *Client) read(l *link) {
	buf := make([]byte, wire.MaxSessionPacket)
	defer close(l.dead)
	for {
		m, fds, err := wire.RecvSession(l.conn, buf)
		if err != nil {
			l.err = err
			return
		}
		if m.Op == wire.OpRecall {
			closeFDs(fds)
			go c.recall(l, m)
			continue
		}
		if m.Op == wire.OpDurability {
			closeFDs(fds)
			c.durabilityChanged(m)
			continue
		}
		select {
		case l.answers <- answer{m, fds}:
		case <-time.After(10 * time.Second):
			// Nobody waits (an answer to a request given up on): drop it.
			closeFDs(fds)
		}
	}
}

// keep watches the connection: when it ends, it dials again until a
// daemon answers (or Close), and hands the mappings over.
func (c *Client) keep(l *link) {
	defer close(c.done)
	for {
		select {
		case <-l.dead:
		case <-c.stop:
			l.conn.Close() // Close may have looked before this link was made
			return
		}
		c.linkMu.Lock()
		if c.link == l {
			c.link, c.up = nil, make(chan struct{})
		}
		c.linkMu.Unlock()
		if l = c.reconnect(); l == nil {
			return
		}
	}
}

// reconnect dials until a daemon answers and adopts every mapping, then
// makes the new connection the client's; nil after Close.
func (c *Client) reconnect() *link {
	for wait := time.Duration(0); ; wait = min(max(2*wait, 5*time.Millisecond), 250*time.Millisecond) {
		select {
		case <-c.stop:
			return nil
		case <-time.After(wait):
		}
		conn, err := dial(context.Background(), c.socket)
		if err != nil {
			continue // no daemon yet
		}
		l := c.newLink(conn)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		c.mu.Lock()
		err = c.adoptAll(ctx, l)
		cancel()
		if err == nil {
			c.linkMu.Lock()
			c.link = l
			close(c.up)
			c.linkMu.Unlock()
		}
		c.mu.Unlock()
		if err == nil {
			c.reconnects.Add(1)
			return l
		}
		conn.Close()
		<-l.dead
	}
}

// Reconnects counts the times the client connected again after losing
// its daemon (and handed its mappings to the new one).
func (c *Client) Reconnects() int64 { return c.reconnects.Load() }

// Close ends the session: the daemon releases every mapping of it, and
// the client lets go of their write protection (the memory stays mapped
// in this process, unprotected: close mappings first).
func (c *Client) Close() error {
	c.mapsMu.Lock()
	if c.closed {
		c.mapsMu.Unlock()
		return nil
	}
	c.closed = true
	maps := make([]*Mapping, 0, len(c.maps))
	for _, m := range c.maps {
		maps = append(maps, m)
	}
	c.mapsMu.Unlock()
	close(c.stop)
	var err error
	if l := c.current(); l != nil {
		err = l.conn.Close()
	}
	<-c.done
	for _, m := range maps {
		m.releaseUFFD()
	}
	return err
}

func (c *Client) isClosed() bool {
	c.mapsMu.Lock()
	defer c.mapsMu.Unlock()
	return c.closed
}

// current returns the connection, or nil while there is none.
func (c *Client) current() *link {
	c.linkMu.Lock()
	defer c.linkMu.Unlock()
	return c.link
}

// connected waits for a connection (after a daemon restart, for the new
// daemon), until ctx ends or the client is closed.
func (c *Client) connected(ctx context.Context) (*link, error) {
	for {
		if c.isClosed() {
			return nil, errors.New("daxsnap: client is closed")
		}
		c.linkMu.Lock()
		l, up := c.link, c.up
		c.linkMu.Unlock()
		if l != nil {
			return l, nil
		}
		select {
		case <-up:
		case <-c.stop:
		case <-ctx.Done():
			return nil, fmt.Errorf("daxsnap: waiting for the daemon (%s): %w", c.socket, ctx.Err())
		}
	}
}

// send sends one packet.
func (l *link) send(m wire.SessionMsg, fds ...int) error {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	return wire.SendSession(l.conn, m, fds...)
}

// exchange sends m with fds on l and waits for the answer, honouring
// ctx. c.mu held. A connection that fails, or whose answer is given up
// on (it may still come), is closed: the client connects again.
func (c *Client) exchange(ctx context.Context, l *link, m wire.SessionMsg, fds ...int) (wire.SessionMsg, []int, error) {
	if err := l.send(m, fds...); err != nil {
		l.conn.Close()
		return wire.SessionMsg{}, nil, fmt.Errorf("daxsnap: session: %w: %w", errLost, err)
	}
	select {
	case a := <-l.answers:
		if a.msg.ID != m.ID && a.msg.Op != wire.OpError {
			closeFDs(a.fds)
			l.conn.Close()
			return wire.SessionMsg{}, nil, fmt.Errorf("daxsnap: protocol error: answer %q for request %d, want %d", a.msg.Op, a.msg.ID, m.ID)
		}
		return a.msg, a.fds, nil
	case <-l.dead:
		return wire.SessionMsg{}, nil, fmt.Errorf("daxsnap: session: %w: %w", errLost, l.err)
	case <-ctx.Done():
		l.conn.Close()
		return wire.SessionMsg{}, nil, fmt.Errorf("daxsnap: %w (connection dropped; the client connects again)", ctx.Err())
	}
}

func refused(op, device string, r wire.SessionMsg) error {
	if r.Error == nil {
		return &Error{Op: op, Device: device, Code: wire.CodeInternal, Message: fmt.Sprintf("unexpected answer %q", r.Op)}
	}
	return &Error{Op: op, Device: device, Code: r.Error.Code, Message: r.Error.Error}
}
