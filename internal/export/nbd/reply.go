package nbd

import (
	"encoding/binary"
	"net"
)

// Reply writers. Each is called with wmu held and only buffers; the
// caller decides when to flush. After a write failure they do nothing.
//
// With structured replies negotiated, READ answers with one
// OFFSET_DATA chunk (or NONE for an empty read), BLOCK_STATUS with one
// BLOCK_STATUS chunk per selected context, every error with an ERROR chunk carrying a message,
// and other successes with a simple reply, which the spec allows for
// replies without payload.

func (c *conn) replySimple(r *request, errno uint32) {
	c.write(appendSimpleReply(c.hdr[:0], errno, r.cookie), nil)
}

func (c *conn) replyError(r *request, errno uint32, msg string) {
	if c.sess.structured {
		c.write(appendErrorChunk(c.hdr[:0], r.cookie, errno, msg), nil)
		return
	}
	c.replySimple(r, errno)
}

func (c *conn) replyRead(r *request, data []byte) {
	if c.sess.structured && len(data) == 0 {
		// OFFSET_DATA must carry at least one byte.
		c.write(appendChunkHeader(c.hdr[:0], replyFlagDone, chunkNone, r.cookie, 0), nil)
		return
	}
	c.write(c.readHeader(r, len(data)), data)
}

// readHeader is the header of a READ reply that carries n > 0 bytes.
func (c *conn) readHeader(r *request, n int) []byte {
	if !c.sess.structured {
		return appendSimpleReply(c.hdr[:0], 0, r.cookie)
	}
	h := appendChunkHeader(c.hdr[:0], replyFlagDone, chunkOffsetData, r.cookie, uint32(8+n))
	return binary.BigEndian.AppendUint64(h, r.offset)
}

// replyReadLent is replyRead of lent data (job.lent), which it gives
// back: what the socket takes at once goes out straight from the
// memory, the rest from a copy in j.buf, so that a client slow to read
// holds no loan (nor a suspend of the device behind it) meanwhile.
func (c *conn) replyReadLent(r *request, j *job) {
	hdr := c.readHeader(r, len(j.lent))
	if c.werr != nil || c.bw.Buffered() > 0 {
		// The replies buffered before it go first, and their flush may
		// wait for the client.
		j.unlend(true)
		c.write(hdr, j.buf)
		return
	}
	c.hdr = hdr[:0]
	n, err := c.sock.tryWritev([][]byte{hdr, j.lent})
	if err != nil || n == len(hdr)+len(j.lent) {
		j.unlend(false)
		c.setWriteErr(err)
		return
	}
	j.unlend(true)
	rest := net.Buffers{hdr[min(n, len(hdr)):], j.buf[max(n-len(hdr), 0):]}
	_, err = rest.WriteTo(c.nc)
	c.setWriteErr(err)
}

// replyBlockStatus sends one BLOCK_STATUS chunk per context, the last
// one flagged done.
func (c *conn) replyBlockStatus(r *request, payloads [][]byte) {
	for i, p := range payloads {
		flags := uint16(0)
		if i == len(payloads)-1 {
			flags = replyFlagDone
		}
		c.write(appendChunkHeader(c.hdr[:0], flags, chunkBlockStatus, r.cookie, uint32(len(p))), p)
	}
}

// directWrite: payloads at least this large skip the buffer and go out
// with the header in one writev, after what was buffered before them.
const directWrite = 64 << 10

func (c *conn) write(hdr, data []byte) {
	c.hdr = hdr[:0] // keep any growth
	if c.werr != nil {
		return
	}
	if len(data) >= directWrite {
		c.flushLocked()
		if c.werr == nil {
			bufs := net.Buffers{hdr, data}
			_, err := bufs.WriteTo(c.nc)
			c.setWriteErr(err)
			c.uncork()
		}
		return
	}
	if _, err := c.bw.Write(hdr); err != nil {
		c.setWriteErr(err)
		return
	}
	if len(data) > 0 {
		_, err := c.bw.Write(data)
		c.setWriteErr(err)
	}
}
