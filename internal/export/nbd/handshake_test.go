package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
	"time"
)

// handshakeRig is a server with a read-write export "disk", a read-only
// "ro" and an export whose size is not a multiple of 512.
func handshakeRig(t *testing.T, opts Options) (*testServer, *memBackend) {
	t.Helper()
	m := newMem(1 << 20)
	exp := newExports().
		add(Export{Name: "disk", Description: "the test disk", Backend: m}).
		add(Export{Name: "ro", Backend: m, ReadOnly: true}).
		add(Export{Name: "odd", Backend: plainBackend{newMem(1000)}})
	return startServer(t, exp, opts), m
}

func fixed(t *testing.T, ts *testServer) *rawClient {
	c := dialRaw(t, "tcp", ts.tcp)
	c.clientFlags(clientFixedNewstyle | clientNoZeroes)
	return c
}

func TestHandshake_greeting(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := dialRaw(t, "unix", ts.unix)
	if c.hsFlags != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("handshake flags 0x%x, want FIXED_NEWSTYLE|NO_ZEROES", c.hsFlags)
	}
}

func TestHandshake_unknownClientFlags(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := dialRaw(t, "tcp", ts.tcp)
	c.clientFlags(clientFixedNewstyle | 1<<5)
	c.expectClosed()
}

func TestHandshake_exportName(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	for _, noZeroes := range []bool{false, true} {
		c := dialRaw(t, "tcp", ts.tcp)
		flags := uint32(clientFixedNewstyle)
		if noZeroes {
			flags |= clientNoZeroes
		}
		c.clientFlags(flags)
		c.sendOpt(optExportName, []byte("disk"))
		var b [10]byte
		c.readFull(b[:])
		if size := binary.BigEndian.Uint64(b[:]); size != 1<<20 {
			t.Fatalf("EXPORT_NAME size %d", size)
		}
		if tf := binary.BigEndian.Uint16(b[8:]); tf&(tflagHasFlags|tflagSendFlush|tflagCanMultiConn) != tflagHasFlags|tflagSendFlush|tflagCanMultiConn || tf&tflagSendDF != 0 {
			t.Fatalf("EXPORT_NAME flags 0x%x", tf)
		}
		if !noZeroes {
			z := make([]byte, 124)
			c.readFull(z)
			if !bytes.Equal(z, make([]byte, 124)) {
				t.Fatal("the 124 reserved bytes are not zero")
			}
		}
		// The next bytes must be the reply to this request, not padding.
		rep := c.do(request{typ: cmdRead, cookie: 7, length: 512}, nil)
		if rep.errno != 0 || len(rep.data) != 512 {
			t.Fatalf("read after EXPORT_NAME: %v", rep)
		}
	}
}

func TestHandshake_exportNameUnknownCloses(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	c.sendOpt(optExportName, []byte("nope"))
	c.expectClosed()
}

func TestHandshake_abort(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	c.expectOpt(optAbort, []byte("ignored data"), repAck)
	c.expectClosed()
}

func TestHandshake_list(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	rs := c.expectOpt(optList, nil, repAck)
	var names []string
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repServer {
			t.Fatalf("LIST reply type 0x%x", r.typ)
		}
		n := binary.BigEndian.Uint32(r.data)
		names = append(names, string(r.data[4:4+n])+"|"+string(r.data[4+n:]))
	}
	if got := strings.Join(names, ","); got != "disk|the test disk,ro|,odd|" {
		t.Fatalf("LIST: %s", got)
	}
	rs = c.expectOpt(optList, []byte{1}, repErrInvalid)
	if len(rs[0].data) == 0 {
		t.Fatal("ERR_INVALID without a message")
	}
	c.expectOpt(optList, nil, repAck) // still negotiating
}

func infoReplies(t *testing.T, rs []optReply) map[uint16][]byte {
	t.Helper()
	m := map[uint16][]byte{}
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repInfo || len(r.data) < 2 {
			t.Fatalf("reply 0x%x of %d bytes before ACK", r.typ, len(r.data))
		}
		typ := binary.BigEndian.Uint16(r.data)
		if _, dup := m[typ]; dup {
			t.Fatalf("info %d sent twice", typ)
		}
		m[typ] = r.data[2:]
	}
	return m
}

func TestHandshake_info(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	req := appendInfoRequest(nil, infoRequest{name: "disk", infos: []uint16{infoName, infoDescription, infoBlockSize, infoName, 77}})
	info := infoReplies(t, c.expectOpt(optInfo, req, repAck))
	if e := info[infoExport]; len(e) != 10 || binary.BigEndian.Uint64(e) != 1<<20 {
		t.Fatalf("INFO_EXPORT %x", e)
	}
	tf := binary.BigEndian.Uint16(info[infoExport][8:])
	want := uint16(tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagSendFastZero | tflagCanMultiConn | tflagSendCache)
	if tf != want {
		t.Fatalf("transmission flags 0x%04x, want 0x%04x", tf, want)
	}
	if string(info[infoName]) != "disk" || string(info[infoDescription]) != "the test disk" {
		t.Fatalf("name %q description %q", info[infoName], info[infoDescription])
	}
	bs := info[infoBlockSize]
	if len(bs) != 12 || binary.BigEndian.Uint32(bs) != 512 || binary.BigEndian.Uint32(bs[4:]) != 4096 || binary.BigEndian.Uint32(bs[8:]) != 32<<20 {
		t.Fatalf("BLOCK_SIZE %x", bs)
	}
	// INFO does not end negotiation, and released what it opened.
	c.expectOpt(optList, nil, repAck)
	if ts.exp.opened.Load() != 1 || ts.exp.released.Load() != 1 {
		t.Fatalf("INFO opened %d, released %d", ts.exp.opened.Load(), ts.exp.released.Load())
	}
}

func TestHandshake_infoFlagsPerExport(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	c.expectOpt(optStructuredReply, nil, repAck)
	info := infoReplies(t, c.expectOpt(optInfo, appendInfoRequest(nil, infoRequest{name: "ro"}), repAck))
	tf := binary.BigEndian.Uint16(info[infoExport][8:])
	if tf&tflagReadOnly == 0 || tf&(tflagSendTrim|tflagSendWriteZeroes|tflagSendFastZero) != 0 || tf&tflagSendDF == 0 {
		t.Fatalf("read-only export with structured replies: flags 0x%04x", tf)
	}
	info = infoReplies(t, c.expectOpt(optInfo, appendInfoRequest(nil, infoRequest{name: "odd"}), repAck))
	tf = binary.BigEndian.Uint16(info[infoExport][8:])
	if tf&tflagSendFastZero != 0 {
		t.Fatalf("FAST_ZERO advertised for a backend that is not a FastZeroer: 0x%04x", tf)
	}
	if min := binary.BigEndian.Uint32(info[infoBlockSize]); min != 1 {
		t.Fatalf("1000-byte export advertises minimum block %d, want 1", min)
	}
	if _, ok := info[infoName]; ok {
		t.Fatal("NAME sent without being asked")
	}
}

func TestHandshake_infoErrors(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	rs := c.expectOpt(optGo, appendInfoRequest(nil, infoRequest{name: "nope"}), repErrUnknown)
	if len(rs) != 1 || !strings.Contains(string(rs[0].data), "nope") {
		t.Fatalf("unknown export: %d replies, message %q", len(rs), rs[0].data)
	}
	c.expectOpt(optInfo, []byte{0, 0, 0, 50, 'x', 0, 0}, repErrInvalid)
	c.expectOpt(optGo, []byte{0, 0}, repErrInvalid)
	// Still negotiating: GO now works.
	c.expectOpt(optGo, appendInfoRequest(nil, infoRequest{name: "disk"}), repAck)
	if rep := c.do(request{typ: cmdFlush, cookie: 1}, nil); rep.errno != 0 {
		t.Fatalf("flush after GO: %v", rep)
	}
}

func TestHandshake_unsupportedOptions(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	for _, opt := range []uint32{optStartTLS, optPeekExport, optExtendedHeaders, 12345, 0} {
		rs := c.expectOpt(opt, []byte("some data"), repErrUnsup)
		if len(rs[0].data) == 0 {
			t.Fatalf("%s: ERR_UNSUP without a message", optName(opt))
		}
	}
	c.expectOpt(optList, nil, repAck)
}

func TestHandshake_structuredReply(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	c.expectOpt(optStructuredReply, []byte{0}, repErrInvalid)
	c.expectOpt(optStructuredReply, nil, repAck)
	c.expectOpt(optStructuredReply, nil, repAck)
}

func TestHandshake_metaContext(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	list := func(queries ...string) []optReply {
		return c.expectOpt(optListMetaContext, appendMetaRequest(nil, metaRequest{name: "disk", queries: queries}), repAck)
	}
	// Before STRUCTURED_REPLY, both are refused.
	c.expectOpt(optListMetaContext, appendMetaRequest(nil, metaRequest{name: "disk"}), repErrInvalid)
	c.expectOpt(optSetMetaContext, appendMetaRequest(nil, metaRequest{name: "disk", queries: []string{baseAllocationName}}), repErrInvalid)
	c.expectOpt(optStructuredReply, nil, repAck)

	for _, q := range [][]string{nil, {"base:"}, {baseAllocationName}, {"qemu:dirty-bitmap:x", baseAllocationName}} {
		rs := list(q...)
		if len(rs) != 2 || rs[0].typ != repMetaContext || string(rs[0].data[4:]) != baseAllocationName {
			t.Fatalf("LIST_META_CONTEXT %q: %v", q, rs)
		}
	}
	if rs := list("qemu:dirty-bitmap:x", "base:nonesuch", "nocolon"); len(rs) != 1 {
		t.Fatalf("LIST_META_CONTEXT of unknown contexts: %d replies, want only ACK", len(rs))
	}
	c.expectOpt(optListMetaContext, []byte{0, 0, 0, 0, 0, 0, 0, 9}, repErrInvalid)

	// SET with "base:" selects nothing; with base:allocation, an id.
	rs := c.expectOpt(optSetMetaContext, appendMetaRequest(nil, metaRequest{name: "disk", queries: []string{"base:"}}), repAck)
	if len(rs) != 1 {
		t.Fatalf("SET base: selected %d contexts", len(rs)-1)
	}
	rs = c.expectOpt(optSetMetaContext, appendMetaRequest(nil, metaRequest{name: "disk", queries: []string{baseAllocationName}}), repAck)
	if len(rs) != 2 || binary.BigEndian.Uint32(rs[0].data) != baseAllocationID {
		t.Fatalf("SET base:allocation: %v", rs)
	}
}

// TestHandshake_metaContextFollowsExport checks BLOCK_STATUS is allowed
// only for the export the last SET_META_CONTEXT named.
func TestHandshake_metaContextFollowsExport(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	cases := []struct {
		name    string
		setName string
		queries []string
		failSet bool // a second, failing SET (malformed) after the good one
		want    uint32
	}{
		{"same export", "disk", []string{baseAllocationName}, false, 0},
		{"other export", "ro", []string{baseAllocationName}, false, errInval},
		{"nothing selected", "disk", []string{"x:y"}, false, errInval},
		{"failed SET clears", "disk", []string{baseAllocationName}, true, errInval},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fixed(t, ts)
			c.expectOpt(optStructuredReply, nil, repAck)
			c.structured = true
			c.expectOpt(optSetMetaContext, appendMetaRequest(nil, metaRequest{name: tc.setName, queries: tc.queries}), repAck)
			if tc.failSet {
				c.expectOpt(optSetMetaContext, []byte{1}, repErrInvalid)
			}
			c.expectOpt(optGo, appendInfoRequest(nil, infoRequest{name: "disk"}), repAck)
			rep := c.do(request{typ: cmdBlockStatus, cookie: 3, length: 4096}, nil)
			if rep.errno != tc.want {
				t.Fatalf("BLOCK_STATUS: %v, want errno %d", rep, tc.want)
			}
		})
	}
}

func TestHandshake_oversizedOption(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	rs := c.expectOpt(optList, make([]byte, 100<<10), repErrTooBig)
	if !strings.Contains(string(rs[0].data), "limit") {
		t.Fatalf("ERR_TOO_BIG message %q", rs[0].data)
	}
	c.expectOpt(optList, nil, repAck)
	// Past what the server will skip: it hangs up without reading it.
	c.writeAll(appendOptHeader(nil, optHeader{option: optList, length: 64 << 20}))
	c.expectClosed()
}

func TestHandshake_badOptionMagic(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	c := fixed(t, ts)
	b := appendOptHeader(nil, optHeader{option: optList})
	b[0] ^= 0xff
	c.writeAll(b)
	c.expectClosed()
}

func TestHandshake_timeout(t *testing.T) {
	ts, _ := handshakeRig(t, Options{HandshakeTimeout: 100 * time.Millisecond})
	c := fixed(t, ts)
	start := time.Now()
	c.expectClosed()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("idle negotiation closed after %v", d)
	}
	// Transmission has no timeout.
	c = connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	time.Sleep(300 * time.Millisecond)
	if rep := c.do(request{typ: cmdFlush, cookie: 1}, nil); rep.errno != 0 {
		t.Fatalf("flush after idling in transmission: %v", rep)
	}
}

func TestHandshake_truncated(t *testing.T) {
	ts, _ := handshakeRig(t, Options{})
	sends := [][]byte{
		{},
		{0, 0},
		binary.BigEndian.AppendUint32(nil, clientFixedNewstyle),
		append(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle), appendOptHeader(nil, optHeader{option: optGo, length: 100})[:10]...),
		append(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle), appendOptHeader(nil, optHeader{option: optGo, length: 100})...),
	}
	for _, b := range sends {
		c := dialRaw(t, "tcp", ts.tcp)
		c.writeAll(b)
		_ = c.nc.(interface{ CloseWrite() error }).CloseWrite()
		_, _ = io.Copy(io.Discard, c.br) // the server must close its side
	}
	connect(t, "tcp", ts.tcp, "disk", connectOpts{})
}

// brokenExports opens exports without a backend: a bug in the daemon
// must not crash the server.
type brokenExports struct{ *testExports }

func (b brokenExports) Open(c *Client, name string) (*Export, error) {
	x, err := b.testExports.Open(c, name)
	if x != nil {
		x.Backend = nil
	}
	return x, err
}

func TestHandshake_exportWithoutBackend(t *testing.T) {
	exp := newExports().add(Export{Name: "disk", Backend: newMem(4096)})
	srv := NewServer(brokenExports{exp}, Options{Logger: discardLogger()})
	c := servePipe(t, srv)
	c.clientFlags(clientFixedNewstyle)
	rs := c.expectOpt(optGo, appendInfoRequest(nil, infoRequest{name: "disk"}), repErrUnknown)
	if !strings.Contains(string(rs[0].data), "no backend") {
		t.Fatalf("message %q", rs[0].data)
	}
	if exp.opened.Load() != 1 || exp.released.Load() != 1 {
		t.Fatalf("opened %d released %d", exp.opened.Load(), exp.released.Load())
	}
}
