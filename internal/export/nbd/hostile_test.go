package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// negOpt is one negotiation option a test client sends, with its data.
type negOpt struct {
	opt  uint32
	data []byte
}

// handshakeGo is what a client sends to reach transmission on "disk":
// opts, then NBD_OPT_GO.
func handshakeGo(opts ...negOpt) []byte {
	b := binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
	opts = append(opts, negOpt{optGo, appendInfoRequest(nil, infoRequest{name: "disk"})})
	for _, o := range opts {
		b = appendOptHeader(b, optHeader{option: o.opt, length: uint32(len(o.data))})
		b = append(b, o.data...)
	}
	return b
}

// goHandshake is what a client sends to reach transmission on "disk",
// with structured replies and base:allocation if structured.
func goHandshake(structured bool) []byte {
	if !structured {
		return handshakeGo()
	}
	meta := appendMetaRequest(nil, metaRequest{name: "disk", queries: []string{baseAllocationName}})
	return handshakeGo(negOpt{optStructuredReply, nil}, negOpt{optSetMetaContext, meta})
}

// feedConn writes each of chunks to a connection of srv over a pipe,
// then closes it: the connection must finish (no hang) and release
// every export of exp it opened.
func feedConn(t *testing.T, srv *Server, exp *testExports, chunks ...[]byte) {
	client, server := net.Pipe()
	feedConnOver(t, srv, exp, client, server, chunks...)
}

// feedConnOver is feedConn over the given ends of a connection; a socket
// is half-closed, so that the requests sent are served.
func feedConnOver(t *testing.T, srv *Server, exp *testExports, client, server net.Conn, chunks ...[]byte) {
	c := newConn(srv, server, nil)
	if !srv.addConn(c) {
		t.Fatal("server closed")
	}
	done := make(chan struct{})
	go func() { c.serve(); close(done) }()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	for _, b := range chunks {
		_, _ = client.Write(b)
	}
	if hc, ok := client.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite() // a socket: the server answers what was sent, then reads the end
	} else {
		_ = client.Close()
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("connection did not finish after the client closed")
	}
	if exp.opened.Load() != exp.released.Load() {
		t.Fatalf("opened %d exports, released %d", exp.opened.Load(), exp.released.Load())
	}
}

// TestHostile throws garbage, truncated handshakes and oversized requests
// at the server from many connections at once, then checks a well
// behaved client is still served and every export was released.
func TestHostile(t *testing.T) {
	ts, _ := rig(t, Options{HandshakeTimeout: 2 * time.Second})
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	var attacks [][]byte
	for range 20 {
		attacks = append(attacks, pattern(rnd.IntN(4096), rnd.Uint64())) // pure garbage
	}
	hs := goHandshake(false)
	hsStructured := goHandshake(true)
	for i := 1; i < len(hs); i += 3 {
		attacks = append(attacks, hs[:i]) // truncated handshakes
	}
	for range 30 {
		// A good handshake, then requests with random fields and junk.
		b := append([]byte(nil), hsStructured...)
		for range 1 + rnd.IntN(20) {
			r := request{flags: uint16(rnd.Uint32()), typ: uint16(rnd.IntN(10)), cookie: rnd.Uint64(),
				offset: rnd.Uint64() >> rnd.IntN(64), length: rnd.Uint32() >> rnd.IntN(32)}
			b = appendRequest(b, r)
			if r.typ == cmdWrite {
				b = append(b, pattern(int(min(r.length, 1<<16)), rnd.Uint64())...) // often short
			}
		}
		attacks = append(attacks, b)
	}
	attacks = append(attacks,
		append(append([]byte(nil), hs...), appendRequest(nil, request{typ: cmdWrite, length: 0xffffffff})...),
		append(append([]byte(nil), hs...), appendRequest(nil, request{typ: cmdRead, length: 0xffffffff})...),
		append(append([]byte(nil), hs...), appendOptHeader(nil, optHeader{option: optGo, length: 0xffffffff})...),
		append(binary.BigEndian.AppendUint32(nil, 3), appendOptHeader(nil, optHeader{option: optInfo, length: 0xffffffff})...),
		append(binary.BigEndian.AppendUint32(nil, 1), appendOptHeader(nil, optHeader{option: optExportName, length: 5000})...),
	)
	var wg sync.WaitGroup
	for i, a := range attacks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			network, addr := "tcp", ts.tcp
			if i%2 == 1 {
				network, addr = "unix", ts.unix
			}
			nc, err := net.Dial(network, addr)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
			go func() { _, _ = io.Copy(io.Discard, nc) }()
			_, _ = nc.Write(a)
			if i%3 == 0 {
				return // hang up at once
			}
			_ = nc.(interface{ CloseWrite() error }).CloseWrite()
			time.Sleep(10 * time.Millisecond)
		}()
	}
	wg.Wait()

	good := connect(t, "tcp", ts.tcp, "disk", connectOpts{structured: true, meta: true})
	data := pattern(65536, 7)
	if rep := good.do(request{typ: cmdWrite, cookie: 1, offset: 4096, length: 65536}, data); rep.errno != 0 {
		t.Fatalf("good client write after the attack: %v", rep)
	}
	if rep := good.do(request{typ: cmdRead, cookie: 2, offset: 4096, length: 65536}, nil); rep.errno != 0 || !bytes.Equal(rep.data, data) {
		t.Fatalf("good client read after the attack: %v", rep)
	}
}

// FuzzSession feeds arbitrary client bytes to a server connection, from
// the start of negotiation or after a good handshake: the server must
// neither panic nor hang, and must release what it opened.
func FuzzSession(f *testing.F) {
	f.Add(false, []byte{})
	f.Add(false, goHandshake(true))
	f.Add(true, appendRequest(nil, request{typ: cmdRead, cookie: 1, length: 512}))
	f.Add(true, appendRequest(nil, request{typ: cmdBlockStatus, flags: cmdFlagReqOne, cookie: 1, length: 512}))
	f.Add(true, append(appendRequest(nil, request{typ: cmdWrite, flags: cmdFlagFUA, cookie: 2, offset: 512, length: 4}), 1, 2, 3, 4))
	f.Add(true, appendRequest(nil, request{typ: cmdWriteZeroes, flags: cmdFlagNoHole | cmdFlagFastZero, length: 4096}))
	f.Add(true, appendRequest(nil, request{typ: cmdDisc}))
	m := newMem(1 << 20)
	exp := newExports().add(Export{Name: "disk", Backend: m})
	srv := NewServer(exp, Options{Logger: discardLogger(), HandshakeTimeout: time.Second})
	f.Fuzz(func(t *testing.T, transmitting bool, b []byte) {
		var hs []byte
		if transmitting {
			hs = goHandshake(true)
		}
		feedConn(t, srv, exp, hs, b)
	})
}

// FuzzSessionLent is FuzzSession over a unix socket, from a backend that
// lends its memory for reads (dm.Lender): large READs are then sent from
// lent memory, and every loan must be given back once the connection
// ends, whatever the client sent.
func FuzzSessionLent(f *testing.F) {
	f.Add(true, appendRequest(nil, request{typ: cmdRead, cookie: 1, length: 1 << 20}))
	f.Add(true, append(appendRequest(nil, request{typ: cmdRead, cookie: 1, offset: 4096, length: 64 << 10}),
		appendRequest(nil, request{typ: cmdRead, cookie: 2, offset: 1<<20 - 100, length: 200})...))
	f.Add(true, appendRequest(nil, request{typ: cmdRead, cookie: 3, offset: 1 << 19, length: 1 << 20}))
	f.Add(false, goHandshake(false))
	be := newLendBackend(1 << 20)
	exp := newExports().add(Export{Name: "disk", Backend: be})
	srv := NewServer(exp, Options{Logger: discardLogger(), HandshakeTimeout: time.Second})
	f.Fuzz(func(t *testing.T, transmitting bool, b []byte) {
		var hs []byte
		if transmitting {
			hs = goHandshake(true)
		}
		client, server := socketPair(t)
		feedConnOver(t, srv, exp, client, server, hs, b)
		if n := be.out.Load(); n != 0 {
			t.Fatalf("%d loans still out after the connection ended", n)
		}
	})
}
