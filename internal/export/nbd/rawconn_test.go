package nbd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// unixPair returns the two ends of a unix stream connection.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(shortTempDir(t), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.UnixConn), b.(*net.UnixConn)
}

// Ensure that a rawSocket reads and writes what net.Conn would: whole
// writes larger than the socket buffer (waiting for room), the peer's
// close as io.EOF, a passed read deadline as a timeout (payloadErr
// relies on it), and an error once the socket is closed; and that only
// plain sockets get one.
func TestRawSocket(t *testing.T) {
	a, b := unixPair(t)
	sa, sb := newRawSocket(a), newRawSocket(b)
	if sa == nil || sb == nil {
		t.Fatal("no rawSocket for a unix connection")
	}
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if newRawSocket(p) != nil {
		t.Error("a rawSocket for a net.Pipe")
	}

	want := pattern(8<<20, 3) // well over the socket's buffer
	done := make(chan error, 1)
	go func() {
		n, err := sa.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(sb, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read other bytes than were written")
	}

	_ = b.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	var ne net.Error
	if _, err := sb.Read(got[:1]); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("read past its deadline: %v, want a timeout", err)
	}
	_ = b.SetReadDeadline(time.Time{})

	a.Close()
	if n, err := sb.Read(got); n != 0 || err != io.EOF {
		t.Errorf("read after the peer closed: %d, %v; want 0, io.EOF", n, err)
	}
	b.Close()
	if _, err := sb.Read(got); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read of a closed socket: %v, want net.ErrClosed", err)
	}
	if _, err := sb.Write(got[:1]); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write to a closed socket: %v, want net.ErrClosed", err)
	}
}

// Ensure that a connection on a unix or TCP socket is served through a
// rawSocket once transmission starts, so that serving it does not wake
// the runtime's monitor thread for each burst (rawconn.go).
func TestTransmit_rawSocket(t *testing.T) {
	ts, _ := rig(t, Options{})
	for _, network := range []string{"unix", "tcp"} {
		addr := ts.unix
		if network == "tcp" {
			addr = ts.tcp
		}
		c := connect(t, network, addr, "disk", connectOpts{})
		if r := c.do(request{typ: cmdWrite, cookie: 1, offset: 0, length: 4096}, pattern(4096, 1)); r.errno != 0 {
			t.Fatalf("%s: write failed: errno %d", network, r.errno)
		}
	}
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	if len(ts.srv.conns) != 2 {
		t.Fatalf("%d connections, want 2", len(ts.srv.conns))
	}
	for c := range ts.srv.conns {
		if c.sock == nil {
			t.Errorf("connection %s is served without a rawSocket", c.client.Addr)
		}
	}
}
