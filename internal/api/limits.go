package api

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Limits bound what the control socket's clients may hold: how long a
// request's header and body may take to arrive, how long an idle
// keep-alive connection stays open, and how many connections users
// other than root and the daemon's uid may have open at once. Zero
// fields take the defaults (DefaultLimits).
type Limits struct {
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included (a
	// 32 MiB data write over the socket takes milliseconds); it does not
	// bound the verb itself (a merge may take minutes). Past it, net/http
	// cancels the request's context: handlers must not depend on it.
	ReadTimeout time.Duration
	IdleTimeout time.Duration
	// MaxConns is how many connections users other than root and the
	// daemon's uid may have open together; one more is answered 503 and
	// closed. Root and the daemon's uid are never refused, so a crowd
	// of other users cannot lock them out.
	MaxConns int
}

// DefaultLimits are the control socket's limits unless Options say otherwise.
var DefaultLimits = Limits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       60 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxConns:          128,
}

// withDefaults fills l's zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = DefaultLimits.ReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = DefaultLimits.ReadTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultLimits.IdleTimeout
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultLimits.MaxConns
	}
	return l
}

// limitListener accepts connections, reads each one's credentials, and
// refuses those of unprivileged users beyond the cap.
type limitListener struct {
	net.Listener
	s    *Server
	max  int
	mu   sync.Mutex
	open int // unprivileged connections open
}

// peerConn is an accepted connection with its peer's credentials.
type peerConn struct {
	net.Conn
	peer  Peer
	known bool
	once  sync.Once
	done  func()
}

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	if c.done != nil {
		c.once.Do(c.done)
	}
	return err
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, known := peerOf(c)
		pc := &peerConn{Conn: c, peer: p, known: known}
		if known && (p.UID == 0 || p.UID == l.s.owner) {
			return pc, nil
		}
		l.mu.Lock()
		full := l.open >= l.max
		if !full {
			l.open++
		}
		l.mu.Unlock()
		if !full {
			pc.done = l.release
			return pc, nil
		}
		l.s.log.Warn("control socket: too many connections, refusing one",
			"uid", p.UID, "pid", p.PID, "max", l.max)
		go refuse(c, fmt.Sprintf("uid %d (pid %d): the control socket already has %d connections from users other than root and uid %d, its limit: close idle connections and retry",
			p.UID, p.PID, l.max, l.s.owner))
	}
}

func (l *limitListener) release() {
	l.mu.Lock()
	l.open--
	l.mu.Unlock()
}

// refuse answers c 503 (code retry) with msg, as a JSON error, and
// closes it.
func refuse(c net.Conn, msg string) {
	defer c.Close()
	body, _ := json.Marshal(wire.ErrorBody{Code: wire.CodeRetry, Error: msg})
	body = append(body, '\n')
	c.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		len(body), body)
}
