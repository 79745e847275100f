package nbd

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// preparingBackend is a memBackend that is a dm.WritesPreparer: it
// records each PrepareWrites call.
type preparingBackend struct {
	*memBackend
	mu      sync.Mutex
	batches [][]dm.Range
}

func (p *preparingBackend) PrepareWrites(rs []dm.Range) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.batches = append(p.batches, append([]dm.Range(nil), rs...))
	return nil
}

func (p *preparingBackend) calls() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprint(p.batches)
}

// TestTransmit_prepareWritesBurst: the reader hands a dm.WritesPreparer
// backend the ranges of the valid writes it holds whole in its buffer
// (not an out-of-range one, not one whose payload has not all arrived,
// not other commands) in one call before it serves the first of them,
// and none for the writes that call covered; a read-only export's
// backend is never asked. Without it, each first write after a snapshot
// commits its own exception.
func TestTransmit_prepareWritesBurst(t *testing.T) {
	m := newMem(1 << 20)
	pb := &preparingBackend{memBackend: m}
	ts := startServer(t, newExports().
		add(Export{Name: "disk", Backend: pb}).
		add(Export{Name: "ro", Backend: pb, ReadOnly: true}), Options{})
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	m.hook = func(op string, off, n int64) error {
		if op == "read" && off == 0 {
			once.Do(func() { close(entered); <-release })
		}
		return nil
	}
	c := connect(t, "unix", ts.unix, "disk", connectOpts{})
	// A read held in the backend, so that the burst after it is all in
	// the socket when the reader next reads.
	c.send(request{typ: cmdRead, cookie: 1, length: 4096}, nil)
	<-entered
	var burst []byte
	add := func(r request, payload []byte) { burst = append(appendRequest(burst, r), payload...) }
	add(request{typ: cmdWrite, cookie: 2, offset: 8192, length: 4096}, pattern(4096, 2))
	add(request{typ: cmdFlush, cookie: 3}, nil)
	add(request{typ: cmdWrite, cookie: 4, offset: 1 << 20, length: 4096}, make([]byte, 4096)) // out of range
	add(request{typ: cmdWrite, cookie: 5, offset: 100, length: 10}, pattern(10, 5))
	add(request{typ: cmdWrite, cookie: 6, offset: 65536, length: 4096}, pattern(4096, 6))
	tail := appendRequest(nil, request{typ: cmdWrite, cookie: 7, offset: 4096, length: 512})
	c.writeAll(append(burst, tail...)) // cookie 7's payload comes later
	close(release)
	if rep := c.recv(); rep.cookie != 1 || rep.errno != 0 {
		t.Fatalf("held read: %v", rep)
	}
	want := "[[{8192 4096} {100 10} {65536 4096}]]"
	waitFor(t, "the burst's PrepareWrites", func() bool { return pb.calls() != "[]" })
	c.writeAll(pattern(512, 7))
	for range 6 { // 2 to 7
		rep := c.recv()
		if (rep.cookie == 4) != (rep.errno != 0) {
			t.Fatalf("reply %v", rep)
		}
	}
	if got := pb.calls(); got != want {
		t.Errorf("PrepareWrites calls %s, want %s", got, want)
	}
	if !bytes.Equal(m.bytes(8192, 4096), pattern(4096, 2)) || !bytes.Equal(m.bytes(100, 10), pattern(10, 5)) ||
		!bytes.Equal(m.bytes(65536, 4096), pattern(4096, 6)) || !bytes.Equal(m.bytes(4096, 512), pattern(512, 7)) {
		t.Error("the writes did not all land")
	}

	ro := connect(t, "unix", ts.unix, "ro", connectOpts{})
	ro.send(request{typ: cmdWrite, cookie: 1, offset: 0, length: 512}, make([]byte, 512))
	ro.send(request{typ: cmdWrite, cookie: 2, offset: 512, length: 512}, make([]byte, 512))
	for range 2 {
		if rep := ro.recv(); rep.errno == 0 {
			t.Fatalf("write to a read-only export: %v", rep)
		}
	}
	if got := pb.calls(); got != want {
		t.Errorf("PrepareWrites calls %s after writes to a read-only export, want still %s", got, want)
	}
}
