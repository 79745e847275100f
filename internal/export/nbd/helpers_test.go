package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// memBackend is an in-memory Backend and Extenter: a byte slice behind a
// lock, with a per-4-KiB allocation map so Discard and WriteZeroes make
// holes that Extents reports.
type memBackend struct {
	mu      sync.RWMutex
	data    []byte
	alloc   []bool // per memBlock: holds written data
	flushes atomic.Int64
	writes  atomic.Int64
	// hook, if set, runs before every operation; an error fails it.
	// Tests use it to inject errors and to hold requests.
	hook func(op string, off, n int64) error
}

const memBlock = 4096

func newMem(size int64) *memBackend {
	return &memBackend{data: make([]byte, size), alloc: make([]bool, (size+memBlock-1)/memBlock)}
}

func (m *memBackend) Size() int64 { return int64(len(m.data)) }

func (m *memBackend) check(op string, off, n int64) error {
	if m.hook != nil {
		if err := m.hook(op, off, n); err != nil {
			return err
		}
	}
	if off < 0 || n < 0 || off+n > int64(len(m.data)) {
		return fmt.Errorf("%w: %s of %d bytes at %d, size %d", dm.ErrOutOfRange, op, n, off, len(m.data))
	}
	return nil
}

func (m *memBackend) ReadAt(p []byte, off int64) (int, error) {
	if err := m.check("read", off, int64(len(p))); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return copy(p, m.data[off:]), nil
}

func (m *memBackend) WriteAt(p []byte, off int64) (int, error) {
	if err := m.check("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	m.writes.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mark(off, int64(len(p)), true)
	return copy(m.data[off:], p), nil
}

func (m *memBackend) Flush() error {
	m.flushes.Add(1)
	return m.check("flush", 0, 0)
}

func (m *memBackend) Discard(off, n int64) error { return m.zero("discard", off, n) }

func (m *memBackend) WriteZeroes(off, n int64) error { return m.zero("zero", off, n) }

func (m *memBackend) FastZero() bool { return true }

func (m *memBackend) zero(op string, off, n int64) error {
	if err := m.check(op, off, n); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	m.mark(off, n, false)
	return nil
}

// mark sets the allocation of blocks; unallocating only whole blocks.
func (m *memBackend) mark(off, n int64, allocated bool) {
	if n == 0 {
		return
	}
	first, last := off/memBlock, (off+n-1)/memBlock
	for b := first; b <= last; b++ {
		whole := b*memBlock >= off && (b+1)*memBlock <= off+n
		if allocated || whole {
			m.alloc[b] = allocated
		}
	}
}

func (m *memBackend) Extents(off, n int64) ([]Extent, error) {
	if err := m.check("extents", off, n); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Extent
	for pos := off; pos < off+n; {
		b := pos / memBlock
		end := min((b+1)*memBlock, int64(len(m.data)))
		hole := !m.alloc[b]
		if k := len(out) - 1; k >= 0 && out[k].Hole == hole {
			out[k].Length += end - pos
		} else {
			out = append(out, Extent{Length: end - pos, Hole: hole, Zero: hole})
		}
		pos = end
	}
	return out, nil
}

func (m *memBackend) bytes(off, n int64) []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data[off:off+n]...)
}

// plainBackend hides memBackend's optional interfaces.
type plainBackend struct{ b *memBackend }

func (p plainBackend) Size() int64                            { return p.b.Size() }
func (p plainBackend) ReadAt(b []byte, o int64) (int, error)  { return p.b.ReadAt(b, o) }
func (p plainBackend) WriteAt(b []byte, o int64) (int, error) { return p.b.WriteAt(b, o) }
func (p plainBackend) Flush() error                           { return p.b.Flush() }
func (p plainBackend) Discard(o, n int64) error               { return p.b.Discard(o, n) }
func (p plainBackend) WriteZeroes(o, n int64) error           { return p.b.WriteZeroes(o, n) }

// testExports serves a fixed set of exports and counts opens and releases.
type testExports struct {
	mu       sync.Mutex
	exports  map[string]Export
	order    []string
	opened   atomic.Int64
	released atomic.Int64
	client   atomic.Pointer[Client] // the last Open's or List's
	// refuse makes Open of a name fail with a *RefusedError of this text.
	refuse map[string]string
}

func newExports() *testExports { return &testExports{exports: map[string]Export{}} }

func (e *testExports) add(x Export) *testExports {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exports[x.Name] = x
	e.order = append(e.order, x.Name)
	return e
}

func (e *testExports) Open(c *Client, name string) (*Export, error) {
	e.client.Store(c)
	e.mu.Lock()
	x, ok := e.exports[name]
	why, refused := e.refuse[name]
	e.mu.Unlock()
	if refused {
		return nil, &RefusedError{Err: errors.New(why)}
	}
	if !ok {
		return nil, fmt.Errorf("%w: no export named %q", dm.ErrNotFound, name)
	}
	e.opened.Add(1)
	var once sync.Once
	x.Release = func() { once.Do(func() { e.released.Add(1) }) }
	return &x, nil
}

func (e *testExports) List(c *Client) []ExportInfo {
	e.client.Store(c)
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ExportInfo
	for _, n := range e.order {
		out = append(out, ExportInfo{Name: n, Description: e.exports[n].Description})
	}
	return out
}

// waitReleased waits until every opened export was released.
func (e *testExports) waitReleased(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for e.released.Load() != e.opened.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("opened %d exports, released %d", e.opened.Load(), e.released.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// testServer runs a Server on a TCP port and a unix socket.
type testServer struct {
	srv  *Server
	tcp  string // host:port
	unix string // socket path
	exp  *testExports
	logs *testutil.LogBuffer
}

func startServer(t testing.TB, exp *testExports, opts Options) *testServer {
	t.Helper()
	logs := &testutil.LogBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ts := &testServer{srv: NewServer(exp, opts), exp: exp, logs: logs}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen tcp: %v", err)
	}
	ts.tcp = tl.Addr().String()
	ts.unix = filepath.Join(shortTempDir(t), "nbd.sock")
	ul, err := net.Listen("unix", ts.unix)
	if err != nil {
		t.Fatalf("listen unix: %v", err)
	}
	var wg sync.WaitGroup
	for _, l := range []net.Listener{tl, ul} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ts.srv.Serve(l); err != ErrServerClosed {
				t.Errorf("Serve(%s) = %v, want ErrServerClosed", l.Addr(), err)
			}
		}()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ts.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		wg.Wait()
		exp.waitReleased(t)
		if t.Failed() || os.Getenv("NBD_TEST_LOG") != "" {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return ts
}

// shortTempDir keeps unix socket paths under the 108-byte limit.
func shortTempDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (ts *testServer) uri(name string) string { return "nbd://" + ts.tcp + "/" + name }

func (ts *testServer) unixURI(name string) string {
	return "nbd+unix:///" + name + "?socket=" + ts.unix
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// servePipe serves one connection of srv over an in-memory pipe.
func servePipe(t testing.TB, srv *Server) *rawClient {
	t.Helper()
	client, server := net.Pipe()
	c := newConn(srv, server, nil)
	if !srv.addConn(c) {
		t.Fatal("server is closed")
	}
	go c.serve()
	t.Cleanup(func() { client.Close() })
	rc := &rawClient{t: t, nc: client, br: bufio.NewReader(client), reads: map[uint64]uint32{}}
	var g [18]byte
	rc.readFull(g[:])
	rc.hsFlags = binary.BigEndian.Uint16(g[16:])
	return rc
}

// stalls sums the budget waits of the server's connections.
func (ts *testServer) stalls() int64 {
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	var n int64
	for c := range ts.srv.conns {
		n += c.stalls.Load()
	}
	return n
}

// waitFor polls cond for up to 20 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
