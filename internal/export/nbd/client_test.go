package nbd

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// rawClient speaks the NBD protocol byte by byte, so tests can send what
// no real client would.
type rawClient struct {
	t          testing.TB
	nc         net.Conn
	br         *bufio.Reader
	wmu        sync.Mutex
	hsFlags    uint16
	size       uint64
	tflags     uint16
	structured bool
	// reads maps a pending READ's cookie to its length: a simple reply
	// cannot be parsed without it.
	mu    sync.Mutex
	reads map[uint64]uint32
}

func dialRaw(t testing.TB, network, addr string) *rawClient {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(60 * time.Second))
	c := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc), reads: map[uint64]uint32{}}
	var g [18]byte
	c.readFull(g[:])
	if m := binary.BigEndian.Uint64(g[:]); m != magicNBD {
		t.Fatalf("greeting magic 0x%x", m)
	}
	if m := binary.BigEndian.Uint64(g[8:]); m != magicOpt {
		t.Fatalf("greeting second magic 0x%x, want IHAVEOPT", m)
	}
	c.hsFlags = binary.BigEndian.Uint16(g[16:])
	return c
}

func (c *rawClient) readFull(b []byte) {
	c.t.Helper()
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("read %d bytes from server: %v", len(b), err)
	}
}

func (c *rawClient) writeAll(b []byte) {
	c.t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write %d bytes to server: %v", len(b), err)
	}
}

func (c *rawClient) clientFlags(f uint32) { c.writeAll(binary.BigEndian.AppendUint32(nil, f)) }

func (c *rawClient) sendOpt(opt uint32, data []byte) {
	b := appendOptHeader(nil, optHeader{option: opt, length: uint32(len(data))})
	c.writeAll(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *rawClient) readOptReply() optReply {
	c.t.Helper()
	var h [repHeaderSize]byte
	c.readFull(h[:])
	if m := binary.BigEndian.Uint64(h[:]); m != magicRep {
		c.t.Fatalf("option reply magic 0x%x", m)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	r.data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	c.readFull(r.data)
	return r
}

// optReplies reads replies to opt up to and including the final one.
func (c *rawClient) optReplies(opt uint32) []optReply {
	c.t.Helper()
	var out []optReply
	for {
		r := c.readOptReply()
		if r.opt != opt {
			c.t.Fatalf("reply for option %d while waiting for %d", r.opt, opt)
		}
		out = append(out, r)
		if r.typ != repInfo && r.typ != repServer && r.typ != repMetaContext {
			return out
		}
	}
}

// expectOpt sends an option and checks the final reply type.
func (c *rawClient) expectOpt(opt uint32, data []byte, final uint32) []optReply {
	c.t.Helper()
	c.sendOpt(opt, data)
	rs := c.optReplies(opt)
	if got := rs[len(rs)-1].typ; got != final {
		c.t.Fatalf("%s: final reply 0x%08x (%q), want 0x%08x", optName(opt), got, rs[len(rs)-1].data, final)
	}
	return rs
}

// connectOpts configures connect.
type connectOpts struct {
	structured bool
	meta       bool // select base:allocation
	blockSize  bool // request NBD_INFO_BLOCK_SIZE
}

// connect negotiates and enters transmission with NBD_OPT_GO.
func connect(t testing.TB, network, addr, name string, o connectOpts) *rawClient {
	t.Helper()
	c := dialRaw(t, network, addr)
	c.clientFlags(clientFixedNewstyle | clientNoZeroes)
	if o.structured {
		c.expectOpt(optStructuredReply, nil, repAck)
		c.structured = true
	}
	if o.meta {
		rs := c.expectOpt(optSetMetaContext, appendMetaRequest(nil, metaRequest{name: name, queries: []string{baseAllocationName}}), repAck)
		if len(rs) != 2 {
			t.Fatalf("SET_META_CONTEXT: %d replies, want META_CONTEXT + ACK", len(rs))
		}
	}
	var infos []uint16
	if o.blockSize {
		infos = append(infos, infoBlockSize)
	}
	rs := c.expectOpt(optGo, appendInfoRequest(nil, infoRequest{name: name, infos: infos}), repAck)
	for _, r := range rs {
		if r.typ == repInfo && binary.BigEndian.Uint16(r.data) == infoExport {
			c.size = binary.BigEndian.Uint64(r.data[2:])
			c.tflags = binary.BigEndian.Uint16(r.data[10:])
		}
	}
	if c.tflags&tflagHasFlags == 0 {
		t.Fatalf("GO: no NBD_INFO_EXPORT with HAS_FLAGS in %d replies", len(rs))
	}
	return c
}

// send writes a request (and payload) without waiting.
func (c *rawClient) send(r request, payload []byte) {
	if r.typ == cmdRead {
		c.mu.Lock()
		c.reads[r.cookie] = r.length
		c.mu.Unlock()
	}
	b := appendRequest(make([]byte, 0, requestSize+len(payload)), r)
	c.writeAll(append(b, payload...))
}

// reply is one complete reply, simple or assembled from chunks.
type reply struct {
	cookie     uint64
	structured bool
	errno      uint32
	msg        string
	offset     uint64 // of the OFFSET_DATA chunk
	data       []byte
	chunks     []uint16 // chunk types in order
	context    uint32
	extents    [][2]uint32 // BLOCK_STATUS (length, flags)
	// byContext holds every BLOCK_STATUS chunk's extents by context id
	// (context and extents are the last chunk's).
	byContext map[uint32][][2]uint32
}

// recv reads one complete reply. The server never interleaves chunks of
// different replies, so it reads chunks until DONE.
func (c *rawClient) recv() reply {
	c.t.Helper()
	var m [4]byte
	c.readFull(m[:])
	switch magic := binary.BigEndian.Uint32(m[:]); magic {
	case magicSimple:
		var h [12]byte
		c.readFull(h[:])
		r := reply{errno: binary.BigEndian.Uint32(h[:]), cookie: binary.BigEndian.Uint64(h[4:])}
		c.mu.Lock()
		n, isRead := c.reads[r.cookie]
		delete(c.reads, r.cookie)
		c.mu.Unlock()
		if isRead && r.errno == 0 {
			r.data = make([]byte, n)
			c.readFull(r.data)
		}
		return r
	case magicStructured:
		r := reply{structured: true}
		for done := false; !done; {
			done = c.recvChunk(&r)
		}
		c.mu.Lock()
		delete(c.reads, r.cookie)
		c.mu.Unlock()
		return r
	default:
		c.t.Fatalf("reply magic 0x%08x", magic)
		return reply{}
	}
}

// recvChunk reads one chunk (its magic already consumed for the first).
func (c *rawClient) recvChunk(r *reply) bool {
	c.t.Helper()
	if len(r.chunks) > 0 {
		var m [4]byte
		c.readFull(m[:])
		if binary.BigEndian.Uint32(m[:]) != magicStructured {
			c.t.Fatalf("chunk magic 0x%x inside a structured reply", m)
		}
	}
	var h [16]byte
	c.readFull(h[:])
	flags, typ := binary.BigEndian.Uint16(h[:]), binary.BigEndian.Uint16(h[2:])
	cookie := binary.BigEndian.Uint64(h[4:])
	if len(r.chunks) > 0 && cookie != r.cookie {
		c.t.Fatalf("chunk for cookie %d inside reply %d", cookie, r.cookie)
	}
	r.cookie = cookie
	r.chunks = append(r.chunks, typ)
	p := make([]byte, binary.BigEndian.Uint32(h[12:]))
	c.readFull(p)
	switch typ {
	case chunkNone:
		if len(p) != 0 || flags&replyFlagDone == 0 {
			c.t.Fatalf("NONE chunk with %d bytes, flags %d", len(p), flags)
		}
	case chunkOffsetData:
		if len(p) < 9 {
			c.t.Fatalf("OFFSET_DATA chunk of %d bytes", len(p))
		}
		r.offset, r.data = binary.BigEndian.Uint64(p), p[8:]
	case chunkBlockStatus:
		if len(p) < 12 || (len(p)-4)%8 != 0 {
			c.t.Fatalf("BLOCK_STATUS chunk of %d bytes", len(p))
		}
		r.context = binary.BigEndian.Uint32(p)
		r.extents = nil
		for i := 4; i < len(p); i += 8 {
			r.extents = append(r.extents, [2]uint32{binary.BigEndian.Uint32(p[i:]), binary.BigEndian.Uint32(p[i+4:])})
		}
		if r.byContext == nil {
			r.byContext = map[uint32][][2]uint32{}
		}
		if _, dup := r.byContext[r.context]; dup {
			c.t.Fatalf("two BLOCK_STATUS chunks for context %d in one reply", r.context)
		}
		r.byContext[r.context] = r.extents
	case chunkError:
		if len(p) < 6 {
			c.t.Fatalf("ERROR chunk of %d bytes", len(p))
		}
		r.errno = binary.BigEndian.Uint32(p)
		ml := int(binary.BigEndian.Uint16(p[4:]))
		if ml > len(p)-6 {
			c.t.Fatalf("ERROR chunk message length %d > %d", ml, len(p)-6)
		}
		r.msg = string(p[6 : 6+ml])
	default:
		c.t.Fatalf("unexpected chunk type %d", typ)
	}
	return flags&replyFlagDone != 0
}

// do sends one request and waits for its reply.
func (c *rawClient) do(r request, payload []byte) reply {
	c.t.Helper()
	c.send(r, payload)
	rep := c.recv()
	if rep.cookie != r.cookie {
		c.t.Fatalf("reply cookie %d, want %d", rep.cookie, r.cookie)
	}
	return rep
}

// expectClosed checks the server closed the connection.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Fatalf("server sent 0x%02x; want the connection closed", b)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatalf("server kept the connection open; want it closed")
	}
}

func (r reply) String() string {
	return fmt.Sprintf("cookie %d errno %d msg %q chunks %v %d bytes", r.cookie, r.errno, r.msg, r.chunks, len(r.data))
}
