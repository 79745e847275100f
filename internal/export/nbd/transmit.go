package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// Scheduling. Waking another goroutine costs tens of microseconds on a
// busy machine, more than copying 4 KiB, or even 1 MiB, from memory, so
// the reader serves reads and writes up to 1 MiB itself and only hands
// off requests that may block: flushes, FUA writes, trims, zeroes,
// extent lookups and larger transfers. If reads and writes turn out slow
// too (a disk-backed backend) they go to workers as well, so one slow
// request never holds up the rest.
const (
	inlineMax  = 1 << 20   // largest READ/WRITE the reader serves itself
	scratchMax = 128 << 10 // larger inline payloads use pooled buffers
	// slowThreshold: when the moving average of READ/WRITE service time
	// per slowUnit bytes (a 4 KiB request counts as one unit) passes it,
	// they move to workers: a hand-off is cheaper than waiting.
	slowThreshold = int64(50 * time.Microsecond)
	slowUnit      = 64 << 10
	// jobCharge is added to every handed-off request's in-flight cost,
	// so payload-free requests are bounded too.
	jobCharge = 16 << 10
)

// job is one request being served.
type job struct {
	req    request
	buf    []byte  // payload: write data in, read data out
	pooled *[]byte // buf's pool entry, nil for the reader's scratch
	cost   int64   // in-flight charge, 0 when served inline
	// charged is what a write's payload holds of the server-wide
	// buffer budget (Options.MaxBuffered), until the backend has it.
	charged int64
	// lent: a READ's data is the backend's memory (dm.Lender) instead of
	// buf, until release, which the reply calls.
	lent    []byte
	release func()
}

// transmit reads requests until the client disconnects, the stream
// breaks or the server shuts down.
func (c *conn) transmit() {
	for {
		if !c.requestBuffered() && !c.flush() {
			return
		}
		var hb [requestSize]byte
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			c.endOfStream(err)
			return
		}
		r, err := decodeRequest(hb[:])
		if err != nil {
			c.log.Warn("nbd: malformed request; closing, the stream cannot be resynchronised", "err", err)
			return
		}
		if r.typ == cmdDisc {
			c.log.Debug("nbd: client disconnected (DISC)")
			return
		}
		if err := c.handle(&r); err != nil {
			c.endOfStream(err)
			return
		}
	}
}

// requestBuffered reports whether a whole request, write payload
// included, is already buffered, so reading it will not block and
// buffered replies can wait to be sent with the next ones.
func (c *conn) requestBuffered() bool {
	n := c.br.Buffered()
	if n < requestSize {
		return c.moreTLSPending()
	}
	b, _ := c.br.Peek(requestSize)
	r, err := decodeRequest(b)
	if err != nil {
		return true // reading it will not block; it is rejected at once
	}
	return r.typ != cmdWrite || uint64(n) >= requestSize+uint64(r.length) || c.moreTLSPending()
}

// moreTLSPending reports, on a TLS connection, whether the client has
// sent bytes the server has not read yet. crypto/tls hands over one
// record per Read, so the buffer alone would make every reply go out on
// its own; bytes on the socket are part of a record the client has
// committed to sending, so reading on will not wait for replies.
func (c *conn) moreTLSPending() bool {
	if c.cork == nil {
		return false
	}
	sc, ok := c.raw.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}

func (c *conn) endOfStream(err error) {
	switch {
	case errors.Is(err, io.EOF):
		c.log.Debug("nbd: client closed the connection")
	case c.srv.closing.Load():
		c.log.Debug("nbd: connection closed for shutdown")
	default:
		c.log.Info("nbd: connection lost", "err", err)
	}
}

// handle validates r, then serves it inline or hands it to a worker. An
// error means the stream is broken.
func (c *conn) handle(r *request) error {
	v := c.sess.validate(r)
	if v.errno == 0 && c.srv.closing.Load() {
		v = verdict{errno: errShutdown, msg: "the server is shutting down"}
	}
	if v.errno != 0 {
		if v.hangup {
			c.log.Warn("nbd: invalid request; closing", "cookie", r.cookie, "msg", v.msg)
			return errors.New(v.msg)
		}
		if r.typ == cmdWrite {
			if _, err := c.br.Discard(int(r.length)); err != nil {
				return err
			}
		}
		c.log.Debug("nbd: invalid request", "cookie", r.cookie, "errno", v.errno, "msg", v.msg)
		c.srv.stats.count(r.typ, r.length, true)
		c.wmu.Lock()
		c.replyError(r, v.errno, v.msg)
		c.wmu.Unlock()
		return nil
	}
	if r.typ == cmdWrite {
		c.prepareBurst(r)
	}
	j := job{req: *r}
	if c.inline(r) {
		return c.serveInline(&j)
	}
	return c.dispatch(&j)
}

// serveInline serves j on the reader goroutine.
func (c *conn) serveInline(j *job) error {
	r := &j.req
	if r.typ == cmdWrite && r.length > scratchMax {
		var ok bool
		if j.charged, ok = c.chargeBuffer(int64(r.length)); !ok {
			return errShuttingDown
		}
	}
	if r.typ == cmdWrite && r.length <= scratchMax && int(r.length) <= c.br.Size() {
		// The backend writes the payload from the read buffer (WriteAt
		// keeps no reference), which saves a copy per small write; it is
		// consumed once the write is done.
		p, err := c.peekPayload(int(r.length))
		if err != nil {
			return err
		}
		j.buf = p
		c.run(j, flushLater)
		_, err = c.br.Discard(int(r.length))
		return err
	}
	if r.typ == cmdRead || r.typ == cmdWrite {
		if r.length <= scratchMax {
			j.buf = c.scratchFor(int(r.length))
		} else {
			j.pooled = getBuf(int(r.length))
			j.buf = *j.pooled
			defer putBuf(j.pooled)
		}
	}
	if r.typ == cmdWrite {
		if err := c.readPayload(j.buf); err != nil {
			c.srv.releaseBuffer(j.charged)
			return err
		}
	}
	c.run(j, flushLater)
	return nil
}

// errShuttingDown ends a connection whose reader was waiting for buffer
// space when the server shut down.
var errShuttingDown = errors.New("the server is shutting down")

// chargeBuffer charges a write payload of n bytes to the server-wide
// buffer budget; when it must wait, replies the reader buffered go out
// first, as when the connection's own budget is spent.
func (c *conn) chargeBuffer(n int64) (int64, bool) {
	if !c.srv.bufferFree(n) {
		c.stalls.Add(1)
		c.flush()
	}
	return c.srv.chargeBuffer(n)
}

// readPayload reads a write payload into p, within PayloadTimeout unless
// it is already buffered: a client that sends a header and stalls its
// payload is disconnected.
func (c *conn) readPayload(p []byte) error {
	if c.br.Buffered() >= len(p) {
		_, err := io.ReadFull(c.br, p)
		return err
	}
	c.setReadDeadline(time.Now().Add(c.srv.opts.PayloadTimeout))
	_, err := io.ReadFull(c.br, p)
	c.setReadDeadline(time.Time{})
	return c.payloadErr(len(p), err)
}

// peekPayload is readPayload into the read buffer: it returns the next n
// bytes (n at most the buffer's size) without consuming them.
func (c *conn) peekPayload(n int) ([]byte, error) {
	if c.br.Buffered() >= n {
		return c.br.Peek(n)
	}
	c.setReadDeadline(time.Now().Add(c.srv.opts.PayloadTimeout))
	p, err := c.br.Peek(n)
	c.setReadDeadline(time.Time{})
	return p, c.payloadErr(n, err)
}

// payloadErr explains a payload of n bytes that timed out.
func (c *conn) payloadErr(n int, err error) error {
	if ne, ok := err.(net.Error); ok && ne.Timeout() && !c.srv.closing.Load() {
		t := c.srv.opts.PayloadTimeout
		c.log.Warn("nbd: write payload stalled; closing", "bytes", n, "timeout", t)
		return fmt.Errorf("a write payload of %d bytes did not arrive within %v: %w", n, t, err)
	}
	return err
}

// inline decides whether the reader serves r itself.
func (c *conn) inline(r *request) bool {
	switch r.typ {
	case cmdRead, cmdWrite:
		return r.length <= inlineMax && r.flags&cmdFlagFUA == 0 && c.slow.Load() < slowThreshold
	case cmdCache:
		return true
	case cmdBlockStatus:
		return c.ext == nil && len(c.sess.meta) == 0
	}
	return false
}

// dispatch charges j to the in-flight budget, reads its payload and
// starts a worker for it.
func (c *conn) dispatch(j *job) error {
	r := &j.req
	j.cost = jobCharge
	if r.typ == cmdRead || r.typ == cmdWrite {
		j.cost += int64(r.length)
	}
	c.acquire(j.cost)
	if r.typ == cmdWrite {
		var ok bool
		if j.charged, ok = c.chargeBuffer(int64(r.length)); !ok {
			c.release(j.cost)
			return errShuttingDown
		}
	}
	if r.typ == cmdRead || r.typ == cmdWrite {
		j.pooled = getBuf(int(r.length))
		j.buf = *j.pooled
	}
	if r.typ == cmdWrite {
		if err := c.readPayload(j.buf); err != nil {
			c.srv.releaseBuffer(j.charged)
			putBuf(j.pooled)
			c.release(j.cost)
			return err
		}
	}
	w := new(job)
	*w = *j
	c.workers.Add(1)
	go c.work(w)
	return nil
}

func (c *conn) work(j *job) {
	defer c.workers.Done()
	c.run(j, flushNow)
	if j.pooled != nil {
		putBuf(j.pooled)
	}
	c.release(j.cost)
}

// scratchFor returns the reader's buffer, grown to n bytes.
func (c *conn) scratchFor(n int) []byte {
	if cap(c.scratch) < n {
		c.scratch = make([]byte, max(n, 64<<10))
	}
	return c.scratch[:n]
}

// flushing says when run's reply goes out.
type flushing int

const (
	flushLater flushing = iota // the reader's: when it runs out of buffered requests
	flushNow                   // a worker's: at once
)

// run executes j against the backend and sends its reply, flushed as f
// says.
func (c *conn) run(j *job, f flushing) {
	r := &j.req
	timed := r.typ == cmdRead || r.typ == cmdWrite
	var start time.Time
	if timed {
		start = time.Now()
	}
	status, err := c.exec(j)
	c.srv.releaseBuffer(j.charged) // the backend has the payload
	j.charged = 0
	if timed {
		c.observe(int64(time.Since(start)) / (1 + int64(r.length)/slowUnit))
	}
	c.srv.stats.count(r.typ, r.length, err != nil)
	if !c.wmu.TryLock() {
		// Another reply is going out, maybe to a client slow to read:
		// a loan must not wait behind it.
		j.unlend(true)
		c.wmu.Lock()
	}
	defer c.wmu.Unlock()
	defer j.unlend(false)
	switch {
	case err != nil:
		errno := nbdErrno(err, r)
		msg := cmdName(r.typ) + ": " + err.Error()
		c.log.Warn("nbd: request failed", "cmd", cmdName(r.typ), "cookie", r.cookie, "offset", r.offset, "length", r.length, "errno", errno, "err", err)
		c.replyError(r, errno, msg)
	case r.typ == cmdRead && j.lent != nil:
		c.replyReadLent(r, j)
	case r.typ == cmdRead:
		c.replyRead(r, j.buf)
	case r.typ == cmdBlockStatus:
		c.replyBlockStatus(r, status)
	default:
		c.replySimple(r, 0)
	}
	if f == flushNow {
		c.flushLocked()
	}
}

// slowCap bounds one sample: a request whose goroutine the kernel
// preempted (a busy machine) once takes milliseconds, which alone must
// not move the reader's requests to workers, where each costs a wake-up
// and a reply of its own; a slow backend is slow every time, and two
// capped samples in a row still cross slowThreshold.
const slowCap = 4 * slowThreshold

// observe folds one READ/WRITE service time per unit into the moving
// average (weight 1/8), each sample at most slowCap. Concurrent updates
// may lose one another; the average only steers scheduling.
func (c *conn) observe(ns int64) {
	ns = min(ns, slowCap)
	old := c.slow.Load()
	c.slow.Store(old + (ns-old)/8)
}

// exec performs a validated request on the backend. For BLOCK_STATUS it
// returns the chunk payloads, one per selected context.
func (c *conn) exec(j *job) ([][]byte, error) {
	r := &j.req
	off, n := int64(r.offset), int64(r.length)
	var err error
	switch r.typ {
	case cmdRead:
		if c.lend(j, off) {
			break
		}
		var m int
		m, err = c.be.ReadAt(j.buf, off)
		if m == len(j.buf) && errors.Is(err, io.EOF) {
			err = nil // io.ReaderAt may report EOF with a full read at the end
		} else if err == nil && m < len(j.buf) {
			err = &shortError{"read", m, len(j.buf)}
		}
	case cmdWrite:
		var m int
		m, err = c.be.WriteAt(j.buf, off)
		if err == nil && m < len(j.buf) {
			err = &shortError{"write", m, len(j.buf)}
		}
	case cmdFlush:
		err = c.be.Flush()
	case cmdTrim:
		if err = c.be.Discard(off, n); notSupported(err) {
			err = nil // trim is a hint; ignoring it is allowed
		}
	case cmdWriteZeroes:
		err = c.writeZeroes(r)
	case cmdCache:
		// A hint; the backend is memory or has its own cache.
	case cmdBlockStatus:
		return c.blockStatus(r)
	}
	if err == nil && r.flags&cmdFlagFUA != 0 && (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes) {
		err = c.be.Flush()
	}
	return nil, err
}

// unlend ends j's loan, if any, first copying its data into buf when
// keep.
func (j *job) unlend(keep bool) {
	if j.lent == nil {
		return
	}
	if keep {
		copy(j.buf, j.lent)
	}
	j.release()
	j.lent, j.release = nil, nil
}

// lendMin is the smallest READ sent from lent memory: the copy it saves
// is worth the loan from the size whose reply skips the write buffer.
const lendMin = directWrite

// lend makes j's READ data the backend's memory at off (dm.Lender), when
// the reply can go out without waiting on the client: a plain socket
// (tryWritev), a read of at least lendMin.
func (c *conn) lend(j *job, off int64) bool {
	if c.sock == nil || len(j.buf) < lendMin {
		return false
	}
	mem, release, ok := dm.LendFrom(c.be, off, int64(len(j.buf)))
	if !ok {
		return false
	}
	if len(mem) != len(j.buf) {
		release() // across a table line: copy it
		return false
	}
	j.lent, j.release = mem, release
	return true
}

type shortError struct {
	op   string
	n, m int
}

func (e *shortError) Error() string {
	return fmt.Sprintf("short %s: %d of %d bytes", e.op, e.n, e.m)
}
