package nbd

import (
	"bufio"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// Buffer sizes. Negotiation needs little, and many idle connections must
// not pin much memory; transmission buffers are large enough that a
// queue-depth-16 burst of 4 KiB requests or replies moves in one system
// call.
const (
	handshakeBufSize = 4 << 10
	readBufSize      = 256 << 10
	writeBufSize     = 256 << 10
	socketBufSize    = 4 << 20
	// corkSize holds the TLS records of a full write buffer, with room
	// for their headers and tags.
	corkSize = writeBufSize + 64<<10
)

// conn is one client connection. One goroutine, the reader, runs the
// handshake and then reads every request in order; it serves quick
// requests itself and hands the rest to a goroutine each (see
// transmit.go). Replies from all of them go through bw under wmu.
type conn struct {
	srv *Server
	raw net.Conn // the accepted socket: deadlines and closing from any goroutine
	nc  net.Conn // raw, or the TLS session over it after NBD_OPT_STARTTLS
	log *slog.Logger
	br  *bufio.Reader // reader goroutine only
	// sock is nc for raw reads and writes (rawconn.go) once
	// transmission starts, nil on TLS or a socket it cannot take.
	sock *rawSocket

	// TLS: tlsConf is non-nil on a listener that requires it; client
	// is what Exports get to decide by; cork gathers the records of one
	// flush once TLS is up.
	tlsConf *tls.Config
	client  Client
	cork    *corkedConn

	wmu  sync.Mutex
	bw   *bufio.Writer // guarded by wmu
	werr error         // guarded by wmu: first write failure; later replies are dropped
	hdr  []byte        // guarded by wmu: scratch for reply headers

	// Fixed when transmission starts.
	sess     session
	exp      *Export
	be       Backend
	ext      Extenter               // nil: report everything as data
	metaMaps []MetaMap              // the opened contexts of sess.meta, in order; nil entries failed to open
	noZeroes bool                   // client set NBD_FLAG_C_NO_ZEROES
	export   atomic.Pointer[string] // exp.Name once transmission starts: Disconnect reads it

	mu       sync.Mutex   // guards inflight
	room     sync.Cond    // signalled when inflight drops
	inflight int64        // bytes charged to requests handed to workers
	stalls   atomic.Int64 // times the reader waited for budget (a metric)
	workers  sync.WaitGroup

	slow    atomic.Int64 // moving average of READ/WRITE time per slowUnit, ns
	scratch []byte       // reader goroutine only: payload buffer for inline requests

	// Bursts of writes (prepare.go), reader goroutine only.
	prep     dm.WritesPreparer // the backend, if it is one
	prepared int               // writes coming that the last burst covered
	ranges   []dm.Range        // scratch for the burst's ranges
}

func newConn(s *Server, nc net.Conn, tlsConf *tls.Config) *conn {
	c := &conn{
		srv:     s,
		raw:     nc,
		nc:      nc,
		log:     s.log.With("conn", s.nextID.Add(1), "remote", remoteName(nc)),
		br:      bufio.NewReaderSize(nc, handshakeBufSize),
		bw:      bufio.NewWriterSize(nc, handshakeBufSize),
		hdr:     make([]byte, 0, 64),
		tlsConf: tlsConf,
		client:  Client{Network: nc.LocalAddr().Network(), Addr: remoteName(nc)},
	}
	if uc, ok := nc.(*net.UnixConn); ok {
		c.client.Cred = peerCred(uc)
	}
	c.room.L = &c.mu
	return c
}

// peerCred reads a unix socket peer's SO_PEERCRED; nil if it cannot.
func peerCred(uc *net.UnixConn) *Cred {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || cerr != nil {
		return nil
	}
	return &Cred{PID: int(cred.Pid), UID: cred.Uid, GID: cred.Gid}
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.Network() + ":" + a.String()
	}
	return nc.LocalAddr().Network() + ":" + nc.LocalAddr().String()
}

// serve runs the connection to its end.
func (c *conn) serve() {
	defer c.srv.removeConn(c)
	c.log.Debug("nbd: connection opened")
	if c.handshake() {
		c.transmit()
	}
	c.finish()
}

// finish waits for requests in flight, sends their replies, closes the
// socket and only then releases the export: nothing touches the backend
// after Release.
func (c *conn) finish() {
	c.workers.Wait()
	c.flush()
	if c.cork != nil {
		c.cork.uncork() // close_notify goes out as it is written
	}
	_ = c.nc.Close()
	if c.exp != nil && c.exp.Release != nil {
		c.exp.Release()
	}
	c.log.Debug("nbd: connection closed")
}

// growBuffers swaps the negotiation buffers for transmission ones. The
// writer was just flushed; the reader reads first what the old one
// holds of what the client already sent. A plain socket is read and
// written with raw system calls (rawconn.go).
func (c *conn) growBuffers() {
	var src io.Reader = c.nc
	var dst io.Writer = c.nc
	if c.sock = newRawSocket(c.nc); c.sock != nil {
		src, dst = c.sock, c.sock
	}
	if n := c.br.Buffered(); n > 0 {
		src = io.MultiReader(io.LimitReader(c.br, int64(n)), src)
	}
	c.br = bufio.NewReaderSize(src, readBufSize)
	c.bw = bufio.NewWriterSize(dst, writeBufSize)
	if uc, ok := c.nc.(*net.UnixConn); ok {
		// A unix socket's default buffer (wmem_default, ~208 KiB) makes
		// a large reply park and wake the writer several times; TCP
		// tunes its own. The kernel caps these at wmem_max/rmem_max.
		_ = uc.SetWriteBuffer(socketBufSize)
		_ = uc.SetReadBuffer(socketBufSize)
	}
}

// interrupt wakes the reader out of a blocking read so it notices Shutdown.
func (c *conn) interrupt() { _ = c.raw.SetReadDeadline(time.Now()) }

// setDeadline sets the socket deadline without losing a concurrent
// Shutdown's interrupt.
func (c *conn) setDeadline(t time.Time) {
	_ = c.raw.SetDeadline(t)
	if c.srv.closing.Load() {
		c.interrupt()
	}
}

// setReadDeadline is setDeadline for reads only.
func (c *conn) setReadDeadline(t time.Time) {
	_ = c.raw.SetReadDeadline(t)
	if c.srv.closing.Load() {
		c.interrupt()
	}
}

// flush sends buffered replies; false if the connection is broken.
func (c *conn) flush() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.flushLocked()
	return c.werr == nil
}

func (c *conn) flushLocked() {
	if c.werr == nil && c.bw.Buffered() > 0 {
		c.setWriteErr(c.bw.Flush())
	}
	c.uncork()
}

// uncork sends the TLS records written since the last flush.
func (c *conn) uncork() {
	if c.cork != nil && c.werr == nil {
		c.setWriteErr(c.cork.flush())
	}
}

// corkedConn gathers what crypto/tls writes until flush, which sends it
// in one system call: crypto/tls writes every record (16 KiB at most)
// with its own, where nbdkit corks GnuTLS to send many at once. It is
// only corked once the handshake is done, which needs its messages to go
// out as they are written. crypto/tls serialises its writes, but an
// alert it sends from the reader may meet a flush, hence mu.
type corkedConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	bw     *bufio.Writer
}

func (cc *corkedConn) Write(p []byte) (int, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.corked {
		return cc.Conn.Write(p)
	}
	return cc.bw.Write(p)
}

// uncork flushes and stops gathering.
func (cc *corkedConn) uncork() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	_ = cc.bw.Flush()
	cc.corked = false
}

func (cc *corkedConn) flush() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.bw.Flush()
}

// setWriteErr records the first write failure and closes the socket, so
// the reader stops too: a half-written reply cannot be taken back.
func (c *conn) setWriteErr(err error) {
	if err == nil || c.werr != nil {
		return
	}
	c.werr = err
	c.log.Debug("nbd: write to client failed; closing", "err", err)
	_ = c.raw.Close()
}

// acquire charges cost to the connection's in-flight budget, waiting
// while it is spent. A request larger than the whole budget still runs,
// alone.
func (c *conn) acquire(cost int64) {
	limit := c.srv.opts.MaxInFlight
	c.mu.Lock()
	if c.inflight > 0 && c.inflight+cost > limit {
		// Replies the reader buffered must reach the client while we
		// wait, or a client waiting for them would stall.
		c.stalls.Add(1)
		c.mu.Unlock()
		c.flush()
		c.mu.Lock()
		for c.inflight > 0 && c.inflight+cost > limit {
			c.room.Wait()
		}
	}
	c.inflight += cost
	c.mu.Unlock()
}

func (c *conn) release(cost int64) {
	c.mu.Lock()
	c.inflight -= cost
	c.mu.Unlock()
	c.room.Signal()
}
