package nbd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/testutil"
)

// lendBackend is a memBackend that lends its memory for reads (dm.Lender),
// holding its lock for reading while a loan is out, as a device holds
// off a suspend; it counts loans.
type lendBackend struct {
	*memBackend
	loans, out atomic.Int64
}

func (b *lendBackend) LendRead(off, n int64) ([]byte, func(), bool) {
	if b.check("lend", off, n) != nil {
		return nil, nil, false
	}
	b.mu.RLock()
	b.loans.Add(1)
	b.out.Add(1)
	var once atomic.Bool
	return b.data[off : off+n], func() {
		if !once.CompareAndSwap(false, true) {
			panic("a loan given back twice")
		}
		b.out.Add(-1)
		b.mu.RUnlock()
	}, true
}

func newLendBackend(size int64) *lendBackend {
	b := &lendBackend{memBackend: newMem(size)}
	for i := range b.data {
		b.data[i] = byte(i/4096 + i%253)
	}
	return b
}

// Ensure that large READs are sent from the backend's lent memory, with
// simple and structured replies, over TCP and unix sockets, every loan
// given back once its reply is out, and small ones copied as before.
func TestRead_largeReadsSentFromLentMemory(t *testing.T) {
	const size = 8 << 20
	be := newLendBackend(size)
	ts := startServer(t, newExports().add(Export{Name: "lend", Backend: be}), Options{Logger: discardLogger()})
	for _, network := range []string{"tcp", "unix"} {
		for _, structured := range []bool{false, true} {
			addr := ts.tcp
			if network == "unix" {
				addr = ts.unix
			}
			c := connect(t, network, addr, "lend", connectOpts{structured: structured})
			before := be.loans.Load()
			reads := []struct{ off, n uint32 }{{0, 1 << 20}, {3<<20 + 4096, 1 << 20}, {512, 64 << 10}, {4096, 4096}, {size - 2<<20, 2 << 20}}
			for i, rd := range reads {
				c.send(request{typ: cmdRead, cookie: uint64(i + 1), offset: uint64(rd.off), length: rd.n}, nil)
			}
			for range reads {
				r := c.recv()
				rd := reads[r.cookie-1]
				if r.errno != 0 || !bytes.Equal(r.data, be.data[rd.off:rd.off+rd.n]) {
					t.Fatalf("%s structured=%v: read of %d at %d: errno %d, %d bytes, not the backend's", network, structured, rd.n, rd.off, r.errno, len(r.data))
				}
			}
			if got := be.loans.Load() - before; got != 4 {
				t.Errorf("%s structured=%v: %d loans for the 4 reads of at least %d bytes", network, structured, got, lendMin)
			}
			if n := be.out.Load(); n != 0 {
				t.Errorf("%s structured=%v: %d loans still out after every reply arrived", network, structured, n)
			}
		}
	}
}

// Ensure that a reply from lent memory does not hold the loan while it
// waits for a client that does not read: what the socket does not take
// at once is copied and the loan given back, so a writer (a suspend of
// the device behind it) goes on while the reply waits.
func TestRead_slowClientHoldsNoLoan(t *testing.T) {
	const n = 4 << 20
	be := newLendBackend(8 << 20)
	c, client := slowConn(t, be)

	j := &job{req: request{typ: cmdRead, cookie: 7, offset: 4096, length: n}, buf: make([]byte, n)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(j, flushNow)
	}()
	waitFor(t, "the loan given back while the client reads nothing", func() bool { return be.loans.Load() == 1 && be.out.Load() == 0 })
	if _, err := be.WriteAt([]byte("after the loan"), 4096); err != nil { // waits for every loan
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("the reply went out whole while the client read nothing")
	default:
	}

	// The client reads the reply: the data of the read, not the write
	// that followed it.
	want := newLendBackend(8 << 20).data[4096 : 4096+n]
	got := make([]byte, 28+n) // chunk header, offset, data
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	<-done
	if !bytes.Equal(got[28:], want) {
		t.Fatalf("the reply differs from the data at the read's time at byte %d", testutil.FirstDiff(got[28:], want))
	}
}

// slowConn is a transmitting conn of be over a unix socket pair whose send
// buffers hold far less than a large reply, and the client's end, which
// reads nothing until the test does.
func slowConn(t *testing.T, be Backend) (*conn, net.Conn) {
	t.Helper()
	srv := NewServer(newExports(), Options{Logger: discardLogger()})
	server, client := socketPair(t)
	for _, nc := range []net.Conn{server, client} {
		if err := nc.(*net.UnixConn).SetWriteBuffer(64 << 10); err != nil {
			t.Fatal(err)
		}
	}
	c := newConn(srv, server, nil)
	c.be, c.sess.structured = be, true
	c.sock = newRawSocket(c.nc)
	c.bw = bufio.NewWriter(c.nc)
	return c, client
}

// socketPair returns the two ends of a connected unix stream socket pair,
// closed when the test ends.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conns[i].Close() })
	}
	return conns[0], conns[1]
}

// Ensure that a reply from lent memory that must wait for another reply
// being written (to a client slow to read) gives its loan back before it
// waits.
func TestRead_loanDoesNotWaitBehindAnotherReply(t *testing.T) {
	const n = 4 << 20
	be := newLendBackend(8 << 20)
	want := slices.Clone(be.data)
	c, client := slowConn(t, be)
	var wg sync.WaitGroup
	read := func(cookie uint64, off int64) {
		j := &job{req: request{typ: cmdRead, cookie: cookie, offset: uint64(off), length: n}, buf: make([]byte, n)}
		wg.Go(func() { c.run(j, flushNow) })
	}
	read(1, 0)
	waitFor(t, "the first reply's loan given back", func() bool { return be.loans.Load() == 1 && be.out.Load() == 0 })
	read(2, n) // its reply waits for the first's
	waitFor(t, "the second reply's loan given back while it waits", func() bool { return be.loans.Load() == 2 && be.out.Load() == 0 })
	if _, err := be.WriteAt(bytes.Repeat([]byte{0xee}, 8<<20), 0); err != nil { // waits for every loan
		t.Fatal(err)
	}
	for i := range 2 {
		got := make([]byte, 28+n)
		if _, err := io.ReadFull(client, got); err != nil {
			t.Fatal(err)
		}
		off := int(binary.BigEndian.Uint64(got[20:]))
		if cookie := binary.BigEndian.Uint64(got[8:]); cookie != uint64(i+1) || off != i*n {
			t.Fatalf("reply %d: cookie %d offset %d", i, cookie, off)
		}
		if !bytes.Equal(got[28:], want[off:off+n]) {
			t.Fatalf("reply %d differs from the data at the read's time at byte %d", i, testutil.FirstDiff(got[28:], want[off:off+n]))
		}
	}
	wg.Wait()
}
