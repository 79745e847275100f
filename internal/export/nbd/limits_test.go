package nbd

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// Ensure that clients which send a write header and stall its payload
// cannot make the server buffer more than MaxBuffered, that they are
// disconnected after PayloadTimeout, and that a good client is served
// meanwhile: small writes at once, large ones once there is room.
func TestStalledPayloads(t *testing.T) {
	const (
		maxBuffered = 4 << 20
		big         = 2 << 20 // handed to a worker, charged in full
		stalled     = 6
	)
	ts, m := rig(t, Options{MaxBuffered: maxBuffered, PayloadTimeout: time.Second})
	var hostile []*rawClient
	for i := range stalled {
		c := connect(t, "unix", ts.unix, "disk", connectOpts{})
		b := appendRequest(nil, request{typ: cmdWrite, cookie: uint64(i), length: big})
		c.writeAll(append(b, 1, 2, 3)) // and nothing more
		hostile = append(hostile, c)
	}
	waitFor(t, "the stalled writes to fill the buffer budget", func() bool {
		now, _ := ts.srv.Buffered()
		return now == maxBuffered
	})

	good := connect(t, "unix", ts.unix, "disk", connectOpts{})
	small := pattern(4096, 1)
	if rep := good.do(request{typ: cmdWrite, cookie: 1, offset: 8192, length: 4096}, small); rep.errno != 0 {
		t.Fatalf("small write while stalled clients hold the budget: %v", rep)
	}
	large := pattern(big, 2)
	if rep := good.do(request{typ: cmdWrite, cookie: 2, offset: big, length: big}, large); rep.errno != 0 {
		t.Fatalf("large write after the stalled clients: %v", rep)
	}
	if !bytes.Equal(m.bytes(8192, 4096), small) || !bytes.Equal(m.bytes(big, big), large) {
		t.Fatal("the good client's writes did not land")
	}

	for i, c := range hostile {
		_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
		if b, err := c.br.ReadByte(); err == nil {
			t.Errorf("stalled client %d: server sent 0x%02x, want the connection closed", i, b)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("stalled client %d: still connected after 2 minutes; want it closed after PayloadTimeout", i)
		}
	}
	waitFor(t, "the buffer budget to be given back", func() bool {
		now, _ := ts.srv.Buffered()
		return now == 0
	})
	if _, peak := ts.srv.Buffered(); peak > maxBuffered {
		t.Errorf("peak buffered %d bytes, over MaxBuffered %d", peak, maxBuffered)
	}
	if s := ts.logs.String(); !bytes.Contains([]byte(s), []byte("write payload stalled")) {
		t.Errorf("no log line says why the stalled clients were closed")
	}
}

// TestStalledSmallPayload: a small write, which the reader serves from its
// read buffer, also ends the connection when its payload stalls past
// PayloadTimeout; the write never reaches the backend.
func TestStalledSmallPayload(t *testing.T) {
	ts, m := rig(t, Options{PayloadTimeout: time.Second})
	c := connect(t, "unix", ts.unix, "disk", connectOpts{})
	b := appendRequest(nil, request{typ: cmdWrite, cookie: 1, offset: 4096, length: 4096})
	c.writeAll(append(b, 1, 2, 3)) // and nothing more
	_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
	if b, err := c.br.ReadByte(); err == nil {
		t.Errorf("server sent 0x%02x, want the connection closed", b)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("still connected after 2 minutes; want it closed after PayloadTimeout")
	}
	if got := m.bytes(4096, 3); !bytes.Equal(got, make([]byte, 3)) {
		t.Errorf("the stalled write reached the backend: % x", got)
	}
	if s := ts.logs.String(); !strings.Contains(s, "write payload stalled") {
		t.Errorf("no log line says why the stalled client was closed")
	}
}
