package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// rig is a server with one read-write export "disk" of 4 MiB.
func rig(t *testing.T, opts Options) (*testServer, *memBackend) {
	t.Helper()
	m := newMem(4 << 20)
	exp := newExports().
		add(Export{Name: "disk", Backend: m}).
		add(Export{Name: "ro", Backend: m, ReadOnly: true}).
		add(Export{Name: "plain", Backend: plainBackend{m}})
	return startServer(t, exp, opts), m
}

func pattern(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// both runs f with simple and with structured replies.
func both(t *testing.T, f func(t *testing.T, structured bool)) {
	t.Run("simple", func(t *testing.T) { f(t, false) })
	t.Run("structured", func(t *testing.T) { f(t, true) })
}

func TestTransmit_readWrite(t *testing.T) {
	both(t, func(t *testing.T, structured bool) {
		ts, m := rig(t, Options{})
		c := connect(t, "unix", ts.unix, "disk", connectOpts{structured: structured})
		for i, n := range []int{512, 4096, scratchMax, scratchMax + 512, inlineMax, inlineMax + 512, 4 << 20} {
			data := pattern(n, uint64(i))
			if rep := c.do(request{typ: cmdWrite, cookie: uint64(i), length: uint32(n)}, data); rep.errno != 0 {
				t.Fatalf("write %d bytes: %v", n, rep)
			}
			if !bytes.Equal(m.bytes(0, int64(n)), data) {
				t.Fatalf("write %d bytes: backend holds other data", n)
			}
			rep := c.do(request{typ: cmdRead, cookie: 100 + uint64(i), length: uint32(n)}, nil)
			if rep.errno != 0 || !bytes.Equal(rep.data, data) {
				t.Fatalf("read %d bytes back: %v", n, rep)
			}
			if structured && (len(rep.chunks) != 1 || rep.chunks[0] != chunkOffsetData || rep.offset != 0) {
				t.Fatalf("structured read: chunks %v offset %d", rep.chunks, rep.offset)
			}
			if !structured && rep.structured {
				t.Fatal("structured reply without negotiation")
			}
		}
		// Non-read successes are simple replies in both modes.
		if rep := c.do(request{typ: cmdFlush, cookie: 9}, nil); rep.errno != 0 || rep.structured {
			t.Fatalf("flush: %v", rep)
		}
	})
}

func TestTransmit_zeroLength(t *testing.T) {
	both(t, func(t *testing.T, structured bool) {
		ts, _ := rig(t, Options{})
		c := connect(t, "tcp", ts.tcp, "disk", connectOpts{structured: structured})
		rep := c.do(request{typ: cmdRead, cookie: 1, offset: 4096}, nil)
		if rep.errno != 0 || len(rep.data) != 0 {
			t.Fatalf("zero-length read: %v", rep)
		}
		if structured && (len(rep.chunks) != 1 || rep.chunks[0] != chunkNone) {
			t.Fatalf("zero-length structured read: chunks %v, want one NONE", rep.chunks)
		}
		for _, typ := range []uint16{cmdWrite, cmdTrim, cmdWriteZeroes, cmdCache} {
			if rep := c.do(request{typ: typ, cookie: 2, offset: 4 << 20}, nil); rep.errno != 0 {
				t.Fatalf("zero-length %s at the end: %v", cmdName(typ), rep)
			}
		}
	})
}

func TestTransmit_invalidRequests(t *testing.T) {
	both(t, func(t *testing.T, structured bool) {
		ts, m := rig(t, Options{})
		c := connect(t, "tcp", ts.tcp, "disk", connectOpts{structured: structured})
		const size = 4 << 20
		cases := []struct {
			name    string
			r       request
			payload []byte
			want    uint32
		}{
			{"read past end", request{typ: cmdRead, offset: size - 512, length: 1024}, nil, errInval},
			{"write past end", request{typ: cmdWrite, offset: size - 512, length: 1024}, make([]byte, 1024), errNoSpc},
			{"zeroes past end", request{typ: cmdWriteZeroes, offset: size, length: 512}, nil, errNoSpc},
			{"trim past end", request{typ: cmdTrim, offset: size, length: 512}, nil, errInval},
			{"cache past end", request{typ: cmdCache, offset: size, length: 512}, nil, errInval},
			{"offset wraps", request{typ: cmdRead, offset: ^uint64(0) - 100, length: 512}, nil, errInval},
			{"read too large", request{typ: cmdRead, length: 32<<20 + 1}, nil, errInval},
			{"write too large", request{typ: cmdWrite, length: 33 << 20}, make([]byte, 33<<20), errInval},
			{"unknown command", request{typ: 42, length: 512}, nil, errInval},
			{"unknown flag", request{typ: cmdRead, flags: 1 << 9, length: 512}, nil, errInval},
			{"no hole on write", request{typ: cmdWrite, flags: cmdFlagNoHole, length: 512}, make([]byte, 512), errInval},
			{"req one on read", request{typ: cmdRead, flags: cmdFlagReqOne, length: 512}, nil, errInval},
			{"flush with offset", request{typ: cmdFlush, offset: 512}, nil, errInval},
			{"status without meta", request{typ: cmdBlockStatus, length: 512}, nil, errInval},
		}
		if !structured {
			cases = append(cases, struct {
				name    string
				r       request
				payload []byte
				want    uint32
			}{"df without structured", request{typ: cmdRead, flags: cmdFlagDF, length: 512}, nil, errInval})
		}
		writes := m.writes.Load()
		for i, tc := range cases {
			tc.r.cookie = uint64(1000 + i)
			rep := c.do(tc.r, tc.payload)
			if rep.errno != tc.want {
				t.Fatalf("%s: %v, want errno %d", tc.name, rep, tc.want)
			}
			if structured {
				if len(rep.chunks) != 1 || rep.chunks[0] != chunkError || rep.msg == "" {
					t.Fatalf("%s: structured error should be one ERROR chunk with a message: %v", tc.name, rep)
				}
			} else if rep.structured || len(rep.data) != 0 {
				t.Fatalf("%s: simple error reply expected: %v", tc.name, rep)
			}
			// The stream is still in step: a good request works.
			if rep := c.do(request{typ: cmdRead, cookie: 1, length: 512}, nil); rep.errno != 0 {
				t.Fatalf("read after %s: %v", tc.name, rep)
			}
		}
		if m.writes.Load() != writes {
			t.Fatal("a rejected request reached the backend")
		}
	})
}

func TestTransmit_absurdWriteCloses(t *testing.T) {
	ts, _ := rig(t, Options{})
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	c.send(request{typ: cmdWrite, cookie: 1, length: 100 << 20}, nil)
	c.expectClosed()
}

func TestTransmit_badMagicCloses(t *testing.T) {
	ts, _ := rig(t, Options{})
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{structured: true})
	b := appendRequest(nil, request{typ: cmdRead, length: 512})
	b[3]++
	c.writeAll(b)
	c.expectClosed()
}

func TestTransmit_readOnly(t *testing.T) {
	both(t, func(t *testing.T, structured bool) {
		ts, m := rig(t, Options{})
		c := connect(t, "unix", ts.unix, "ro", connectOpts{structured: structured})
		if c.tflags&tflagReadOnly == 0 {
			t.Fatalf("read-only export without READ_ONLY: 0x%x", c.tflags)
		}
		writes := m.writes.Load()
		for _, r := range []request{
			{typ: cmdWrite, length: 4096},
			{typ: cmdTrim, length: 4096},
			{typ: cmdWriteZeroes, length: 4096},
			{typ: cmdWrite, flags: cmdFlagFUA, length: 4096, offset: 8 << 20}, // RO wins over range
		} {
			var payload []byte
			if r.typ == cmdWrite {
				payload = make([]byte, r.length)
			}
			r.cookie = 5
			if rep := c.do(r, payload); rep.errno != errPerm {
				t.Fatalf("%s on a read-only export: %v, want EPERM", cmdName(r.typ), rep)
			}
		}
		if rep := c.do(request{typ: cmdRead, cookie: 6, length: 4096}, nil); rep.errno != 0 {
			t.Fatalf("read on a read-only export: %v", rep)
		}
		if m.writes.Load() != writes {
			t.Fatal("a write reached the backend through a read-only export")
		}
	})
}

func TestTransmit_alignment(t *testing.T) {
	ts, _ := rig(t, Options{})
	lenient := connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	if rep := lenient.do(request{typ: cmdRead, cookie: 1, offset: 3, length: 5}, nil); rep.errno != 0 || len(rep.data) != 5 {
		t.Fatalf("unaligned read from a client that did not ask for block sizes: %v", rep)
	}
	strict := connect(t, "tcp", ts.tcp, "disk", connectOpts{blockSize: true})
	if rep := strict.do(request{typ: cmdRead, cookie: 1, offset: 3, length: 512}, nil); rep.errno != errInval {
		t.Fatalf("unaligned read from a client that agreed to 512: %v, want EINVAL", rep)
	}
	if rep := strict.do(request{typ: cmdRead, cookie: 2, offset: 512, length: 512}, nil); rep.errno != 0 {
		t.Fatalf("aligned read: %v", rep)
	}
}

func TestTransmit_backendErrors(t *testing.T) {
	both(t, func(t *testing.T, structured bool) {
		ts, m := rig(t, Options{})
		var fail atomic.Pointer[error] // error to inject
		m.hook = func(op string, off, n int64) error {
			if e := fail.Load(); e != nil && off == 8192 {
				return *e
			}
			return nil
		}
		c := connect(t, "tcp", ts.tcp, "disk", connectOpts{structured: structured})
		cases := []struct {
			err  error
			r    request
			want uint32
		}{
			{dm.ErrIO, request{typ: cmdRead, length: 4096}, errIO},
			{fmt.Errorf("cow: %w", dm.ErrNoSpace), request{typ: cmdWrite, length: 4096}, errNoSpc},
			{dm.ErrReadOnly, request{typ: cmdWrite, length: 4096}, errPerm},
			{syscall.ENOMEM, request{typ: cmdRead, length: 256 << 10}, errNoMem},
			{dm.ErrOutOfRange, request{typ: cmdRead, length: 4096}, errInval},
			{dm.ErrOutOfRange, request{typ: cmdWrite, length: 4096}, errNoSpc},
			{syscall.ESHUTDOWN, request{typ: cmdTrim, length: 4096}, errShutdown},
			{dm.ErrBusy, request{typ: cmdWriteZeroes, length: 4096}, errIO},
			{errors.New("disk on fire"), request{typ: cmdWrite, flags: cmdFlagFUA, length: 4096}, errIO},
		}
		for i, tc := range cases {
			fail.Store(&tc.err)
			tc.r.offset, tc.r.cookie = 8192, uint64(i)
			var payload []byte
			if tc.r.typ == cmdWrite {
				payload = make([]byte, tc.r.length)
			}
			rep := c.do(tc.r, payload)
			if rep.errno != tc.want {
				t.Fatalf("%s failing with %v: %v, want errno %d", cmdName(tc.r.typ), tc.err, rep, tc.want)
			}
			if structured && !strings.Contains(rep.msg, tc.err.Error()) {
				t.Fatalf("error chunk message %q does not say %q", rep.msg, tc.err)
			}
		}
	})
}

func TestTransmit_flushAndFUA(t *testing.T) {
	ts, m := rig(t, Options{})
	var mu sync.Mutex
	var ops []string
	m.hook = func(op string, off, n int64) error {
		mu.Lock()
		ops = append(ops, op)
		mu.Unlock()
		return nil
	}
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	for _, r := range []request{
		{typ: cmdWrite, flags: cmdFlagFUA, length: 4096},
		{typ: cmdTrim, flags: cmdFlagFUA, length: 4096},
		{typ: cmdWriteZeroes, flags: cmdFlagFUA, length: 4096},
		{typ: cmdFlush},
		{typ: cmdRead, flags: cmdFlagFUA, length: 4096}, // FUA on a read writes nothing
	} {
		var payload []byte
		if r.typ == cmdWrite {
			payload = make([]byte, r.length)
		}
		if rep := c.do(r, payload); rep.errno != 0 {
			t.Fatalf("%s: %v", cmdName(r.typ), rep)
		}
	}
	mu.Lock()
	got := strings.Join(ops, ",")
	mu.Unlock()
	if want := "write,flush,discard,flush,zero,flush,flush,read"; got != want {
		t.Fatalf("backend saw %s, want %s", got, want)
	}
}

// TestTransmit_flushWaits checks a FLUSH is answered only after the
// backend's Flush returned.
func TestTransmit_flushWaits(t *testing.T) {
	ts, m := rig(t, Options{})
	entered, release := holdFlush(m)
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	c.send(request{typ: cmdFlush, cookie: 1}, nil)
	<-entered
	got := make(chan reply, 1)
	go func() { got <- c.recv() }()
	select {
	case r := <-got:
		t.Fatalf("flush answered while the backend was still flushing: %v", r)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if r := <-got; r.cookie != 1 || r.errno != 0 {
		t.Fatalf("flush reply %v", r)
	}
}

func TestTransmit_writeZeroes(t *testing.T) {
	ts, m := rig(t, Options{})
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{structured: true, meta: true})
	status := func(off, n uint32) [][2]uint32 {
		rep := c.do(request{typ: cmdBlockStatus, cookie: 50, offset: uint64(off), length: n}, nil)
		if rep.errno != 0 {
			t.Fatalf("BLOCK_STATUS: %v", rep)
		}
		return rep.extents
	}
	fill := func() {
		if rep := c.do(request{typ: cmdWrite, cookie: 1, length: 64 << 10}, bytes.Repeat([]byte{0xaa}, 64<<10)); rep.errno != 0 {
			t.Fatal(rep)
		}
	}
	allZero := func(what string) {
		if b := m.bytes(0, 64<<10); !bytes.Equal(b, make([]byte, 64<<10)) {
			t.Fatalf("%s: data not zeroed", what)
		}
	}
	fill()
	if rep := c.do(request{typ: cmdWriteZeroes, cookie: 2, length: 64 << 10}, nil); rep.errno != 0 {
		t.Fatal(rep)
	}
	allZero("WRITE_ZEROES")
	if e := status(0, 64<<10); e[0] != [2]uint32{64 << 10, stateHole | stateZero} {
		t.Fatalf("after WRITE_ZEROES without NO_HOLE, extents %v, want a hole", e)
	}
	fill()
	if rep := c.do(request{typ: cmdWriteZeroes, flags: cmdFlagNoHole, cookie: 3, length: 64 << 10}, nil); rep.errno != 0 {
		t.Fatal(rep)
	}
	allZero("WRITE_ZEROES NO_HOLE")
	if e := status(0, 64<<10); e[0] != [2]uint32{64 << 10, 0} {
		t.Fatalf("after WRITE_ZEROES with NO_HOLE, extents %v, want allocated data", e)
	}
	if rep := c.do(request{typ: cmdWriteZeroes, flags: cmdFlagFastZero, cookie: 4, length: 64 << 10}, nil); rep.errno != 0 {
		t.Fatalf("FAST_ZERO on a FastZeroer: %v", rep)
	}
	fill()
	writes := m.writes.Load()
	rep := c.do(request{typ: cmdWriteZeroes, flags: cmdFlagFastZero | cmdFlagNoHole, cookie: 5, length: 64 << 10}, nil)
	if rep.errno != errNotSup {
		t.Fatalf("FAST_ZERO with NO_HOLE: %v, want ENOTSUP", rep)
	}
	if m.writes.Load() != writes || m.bytes(0, 1)[0] != 0xaa {
		t.Fatal("a failed fast zero changed the export")
	}
}

func TestTransmit_zeroesFallback(t *testing.T) {
	ts, m := rig(t, Options{})
	m.hook = func(op string, off, n int64) error {
		if op == "zero" || op == "discard" {
			return dm.ErrNotSupported
		}
		return nil
	}
	c := connect(t, "tcp", ts.tcp, "plain", connectOpts{})
	if c.tflags&tflagSendFastZero != 0 {
		t.Fatal("FAST_ZERO advertised for a plain backend")
	}
	copy(m.data, bytes.Repeat([]byte{1}, 8192))
	if rep := c.do(request{typ: cmdWriteZeroes, cookie: 1, length: 8192}, nil); rep.errno != 0 {
		t.Fatalf("WRITE_ZEROES on a backend without it: %v", rep)
	}
	if !bytes.Equal(m.bytes(0, 8192), make([]byte, 8192)) {
		t.Fatal("fallback did not write zeroes")
	}
	if rep := c.do(request{typ: cmdTrim, cookie: 2, length: 8192}, nil); rep.errno != 0 {
		t.Fatalf("TRIM on a backend without Discard: %v, want success (trim is a hint)", rep)
	}
	if rep := c.do(request{typ: cmdWriteZeroes, flags: cmdFlagFastZero, cookie: 3, length: 8192}, nil); rep.errno != errInval {
		t.Fatalf("FAST_ZERO when not advertised: %v, want EINVAL", rep)
	}
}

func TestTransmit_blockStatus(t *testing.T) {
	ts, m := rig(t, Options{})
	c := connect(t, "unix", ts.unix, "disk", connectOpts{structured: true, meta: true})
	// Data at [8K,16K) and [20K,24K); holes elsewhere.
	for _, off := range []uint64{8192, 12288, 20480} {
		if rep := c.do(request{typ: cmdWrite, cookie: 1, offset: off, length: 4096}, make([]byte, 4096)); rep.errno != 0 {
			t.Fatal(rep)
		}
	}
	h := uint32(stateHole | stateZero)
	cases := []struct {
		off, n uint32
		flags  uint16
		want   [][2]uint32
	}{
		{0, 32768, 0, [][2]uint32{{8192, h}, {8192, 0}, {4096, h}, {4096, 0}, {8192, h}}},
		{0, 30000, 0, [][2]uint32{{8192, h}, {8192, 0}, {4096, h}, {4096, 0}, {5424, h}}},
		{8192, 4096, 0, [][2]uint32{{4096, 0}}},
		{1000, 2000, 0, [][2]uint32{{2000, h}}},
		{0, 32768, cmdFlagReqOne, [][2]uint32{{8192, h}}},
		{8192, 100000, cmdFlagReqOne, [][2]uint32{{8192, 0}}},
		{4<<20 - 4096, 4096, 0, [][2]uint32{{4096, h}}},
	}
	for _, tc := range cases {
		rep := c.do(request{typ: cmdBlockStatus, flags: tc.flags, cookie: 2, offset: uint64(tc.off), length: tc.n}, nil)
		if rep.errno != 0 || rep.context != baseAllocationID || len(rep.chunks) != 1 {
			t.Fatalf("BLOCK_STATUS %d+%d: %v context %d", tc.off, tc.n, rep, rep.context)
		}
		if fmt.Sprint(rep.extents) != fmt.Sprint(tc.want) {
			t.Fatalf("BLOCK_STATUS %d+%d flags %d: %v, want %v", tc.off, tc.n, tc.flags, rep.extents, tc.want)
		}
	}
	// A failing Extents is an error chunk.
	m.hook = func(op string, off, n int64) error {
		if op == "extents" {
			return dm.ErrIO
		}
		return nil
	}
	if rep := c.do(request{typ: cmdBlockStatus, cookie: 3, length: 4096}, nil); rep.errno != errIO {
		t.Fatalf("failing Extents: %v", rep)
	}
	// Without an Extenter, everything is data.
	p := connect(t, "unix", ts.unix, "plain", connectOpts{structured: true, meta: true})
	rep := p.do(request{typ: cmdBlockStatus, cookie: 4, offset: 4096, length: 65536}, nil)
	if rep.errno != 0 || fmt.Sprint(rep.extents) != "[[65536 0]]" {
		t.Fatalf("BLOCK_STATUS without Extenter: %v %v", rep, rep.extents)
	}
}

// badExtents returns whatever the test sets; the server must still send
// a valid reply.
type badExtents struct {
	*memBackend
	exts []Extent
}

func (b badExtents) Extents(off, n int64) ([]Extent, error) { return b.exts, nil }

func TestTransmit_blockStatusSanitises(t *testing.T) {
	m := newMem(1 << 20)
	cases := []struct {
		exts []Extent
		want string
	}{
		{nil, "[[4096 0]]"},
		{[]Extent{{Length: 0}, {Length: -5, Hole: true}}, "[[4096 0]]"},
		{[]Extent{{Length: 1 << 40, Hole: true}}, "[[4096 1]]"},
		{[]Extent{{Length: 512}, {Length: 512}, {Length: 1024, Zero: true}, {Length: 0, Hole: true}, {Length: 1 << 20, Zero: true}}, "[[1024 0] [3072 2]]"},
	}
	for _, tc := range cases {
		exp := newExports().add(Export{Name: "x", Backend: badExtents{m, tc.exts}})
		ts := startServer(t, exp, Options{})
		c := connect(t, "tcp", ts.tcp, "x", connectOpts{structured: true, meta: true})
		rep := c.do(request{typ: cmdBlockStatus, cookie: 1, length: 4096}, nil)
		if rep.errno != 0 || fmt.Sprint(rep.extents) != tc.want {
			t.Fatalf("extents %v: reply %v %v, want %s", tc.exts, rep, rep.extents, tc.want)
		}
	}
}

func TestTransmit_cache(t *testing.T) {
	ts, _ := rig(t, Options{})
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	if c.tflags&tflagSendCache == 0 {
		t.Fatal("SEND_CACHE not advertised")
	}
	if rep := c.do(request{typ: cmdCache, cookie: 1, length: 1 << 20}, nil); rep.errno != 0 {
		t.Fatalf("CACHE: %v", rep)
	}
}

// TestTransmit_outOfOrder holds a flush and a large write in the backend
// and checks that many small requests sent after them are answered first.
func TestTransmit_outOfOrder(t *testing.T) {
	both(t, func(t *testing.T, structured bool) {
		ts, m := rig(t, Options{})
		release := make(chan struct{})
		var held sync.WaitGroup
		held.Add(2)
		m.hook = func(op string, off, n int64) error {
			if op == "flush" || op == "write" && n == inlineMax*2 {
				held.Done()
				<-release
			}
			return nil
		}
		c := connect(t, "tcp", ts.tcp, "disk", connectOpts{structured: structured})
		c.send(request{typ: cmdFlush, cookie: 1}, nil)
		c.send(request{typ: cmdWrite, cookie: 2, offset: 2 << 20, length: inlineMax * 2}, make([]byte, inlineMax*2))
		held.Wait()
		const n = 200
		for i := range n {
			r := request{typ: cmdRead, cookie: uint64(100 + i), offset: uint64(i * 4096), length: 4096}
			if i%2 == 1 {
				r.typ = cmdWrite
				c.send(r, pattern(4096, uint64(i)))
				continue
			}
			c.send(r, nil)
		}
		seen := map[uint64]bool{}
		for range n {
			rep := c.recv()
			if rep.cookie < 100 || seen[rep.cookie] || rep.errno != 0 {
				t.Fatalf("reply %v (seen before: %v) while the flush and the large write are held", rep, seen[rep.cookie])
			}
			seen[rep.cookie] = true
		}
		close(release)
		for range 2 {
			rep := c.recv()
			if rep.cookie != 1 && rep.cookie != 2 || seen[rep.cookie] || rep.errno != 0 {
				t.Fatalf("reply %v after release", rep)
			}
			seen[rep.cookie] = true
		}
	})
}

// TestTransmit_inFlightBound checks the per-connection budget: with
// requests held in the backend, the server stops reading once the bytes
// in flight reach MaxInFlight, and resumes as they complete.
func TestTransmit_inFlightBound(t *testing.T) {
	const size = 2 * inlineMax // served by workers, charged size+jobCharge each
	const budget = 4*size - 1
	ts, m := rig(t, Options{MaxInFlight: budget})
	var inside, peak atomic.Int64
	release := make(chan struct{})
	m.hook = func(op string, off, n int64) error {
		if op == "read" && n == size {
			cur := inside.Add(1)
			for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
			}
			<-release
			inside.Add(-1)
		}
		return nil
	}
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	const n = 12
	for i := range n {
		c.send(request{typ: cmdRead, cookie: uint64(i), offset: uint64(i) * size % (4 << 20), length: size}, nil)
	}
	wantPeak := int64(budget / (size + jobCharge))
	waitFor(t, "requests to reach the backend", func() bool { return inside.Load() >= wantPeak })
	waitFor(t, "the reader to wait for budget", func() bool { return ts.stalls() > 0 })
	time.Sleep(20 * time.Millisecond) // let any excess arrive
	if got := peak.Load(); got != wantPeak {
		t.Fatalf("%d requests of %d bytes inside the backend at once, want %d (budget %d)", got, size, wantPeak, budget)
	}
	close(release)
	seen := map[uint64]bool{}
	for range n {
		rep := c.recv()
		if rep.errno != 0 || seen[rep.cookie] || len(rep.data) != size {
			t.Fatalf("reply %v", rep)
		}
		seen[rep.cookie] = true
	}
}

// TestTransmit_slowBackend checks small I/O moves off the reader once
// the backend is measured to be slow, so a held read does not block others.
func TestTransmit_slowBackend(t *testing.T) {
	ts, m := rig(t, Options{})
	var hold atomic.Bool
	release := make(chan struct{})
	m.hook = func(op string, off, n int64) error {
		if op != "read" {
			return nil
		}
		if hold.Load() && off == 0 {
			<-release
		}
		time.Sleep(200 * time.Microsecond) // a disk, not memory
		return nil
	}
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	for i := range 50 { // teach the server the backend is slow
		if rep := c.do(request{typ: cmdRead, cookie: uint64(i), offset: 4096, length: 4096}, nil); rep.errno != 0 {
			t.Fatal(rep)
		}
	}
	hold.Store(true)
	c.send(request{typ: cmdRead, cookie: 1000, length: 4096}, nil)
	for i := range 10 {
		c.send(request{typ: cmdRead, cookie: uint64(2000 + i), offset: 8192, length: 4096}, nil)
	}
	for range 10 {
		if rep := c.recv(); rep.cookie < 2000 || rep.errno != 0 {
			t.Fatalf("reply %v while the read at 0 is held", rep)
		}
	}
	close(release)
	if rep := c.recv(); rep.cookie != 1000 {
		t.Fatalf("reply %v, want the held read", rep)
	}
}

func TestTransmit_discWaitsForInFlight(t *testing.T) {
	ts, m := rig(t, Options{})
	entered, release := holdFlush(m)
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{structured: true})
	c.send(request{typ: cmdFlush, cookie: 1}, nil)
	<-entered
	c.send(request{typ: cmdDisc, cookie: 2}, nil)
	time.Sleep(20 * time.Millisecond)
	if ts.exp.released.Load() != 0 {
		t.Fatal("export released while a request was still in the backend")
	}
	close(release)
	if rep := c.recv(); rep.cookie != 1 || rep.errno != 0 {
		t.Fatalf("in-flight flush after DISC: %v", rep)
	}
	c.expectClosed()
	ts.exp.waitReleased(t)
}

func TestServer_shutdown(t *testing.T) {
	ts, m := rig(t, Options{})
	entered, release := holdFlush(m)
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{structured: true})
	idle := connect(t, "unix", ts.unix, "disk", connectOpts{})
	neg := fixed(t, ts)
	c.send(request{typ: cmdFlush, cookie: 1}, nil)
	<-entered
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()
	// Negotiating and idle connections close; the busy one waits.
	neg.expectClosed()
	idle.expectClosed()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a request in the backend", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if rep := c.recv(); rep.cookie != 1 || rep.errno != 0 {
		t.Fatalf("in-flight flush across Shutdown: %v", rep)
	}
	c.expectClosed()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ts.exp.waitReleased(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.Serve(l); err != ErrServerClosed {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if _, err := l.Accept(); err == nil {
		t.Fatal("Serve after Shutdown left its listener open")
	}
}

func TestServer_shutdownDeadline(t *testing.T) {
	ts, m := rig(t, Options{})
	entered, release := holdFlush(m)
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	c.send(request{typ: cmdFlush, cookie: 1}, nil)
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck request: %v, want DeadlineExceeded", err)
	}
	c.expectClosed()
	close(release) // the stuck request finishes; then the export is released
	ts.exp.waitReleased(t)
}

// TestServer_shutdownRefusesNewRequests: a request already buffered when
// Shutdown starts is answered with ESHUTDOWN, not executed, while the ones
// being served finish normally.
func TestServer_shutdownRefusesNewRequests(t *testing.T) {
	// A budget smaller than one large read: with the flush held, the
	// reader waits in acquire holding the read, the write buffered behind it.
	ts, m := rig(t, Options{MaxInFlight: 20 << 10})
	entered, release := holdFlush(m)
	c := connect(t, "tcp", ts.tcp, "disk", connectOpts{})
	c.send(request{typ: cmdFlush, cookie: 1}, nil)
	<-entered
	writes := m.writes.Load()
	c.reads[2] = 2 * inlineMax
	burst := appendRequest(nil, request{typ: cmdRead, cookie: 2, length: 2 * inlineMax})
	burst = appendRequest(burst, request{typ: cmdWrite, cookie: 3, length: 512})
	c.writeAll(append(burst, make([]byte, 512)...))
	waitFor(t, "the reader to wait for budget", func() bool { return ts.stalls() > 0 })
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()
	for !ts.srv.closing.Load() {
		time.Sleep(time.Millisecond)
	}
	close(release)
	got := map[uint64]uint32{}
	for range 3 {
		rep := c.recv()
		got[rep.cookie] = rep.errno
	}
	if fmt.Sprint(got) != fmt.Sprintf("map[1:0 2:0 3:%d]", errShutdown) {
		t.Fatalf("replies %v: want flush and read served, write refused with ESHUTDOWN", got)
	}
	c.expectClosed()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if m.writes.Load() != writes {
		t.Fatal("a request refused during Shutdown was executed")
	}
}

// TestTransmit_pipelinedAfterGo sends the handshake and the first
// requests in one write: requests buffered during negotiation survive
// the switch to transmission buffers.
func TestTransmit_pipelinedAfterGo(t *testing.T) {
	ts, m := rig(t, Options{})
	copy(m.data[512:], "pipelined")
	c := dialRaw(t, "unix", ts.unix)
	b := goHandshake(true)
	b = appendRequest(b, request{typ: cmdRead, cookie: 1, offset: 512, length: 9})
	b = appendRequest(b, request{typ: cmdWrite, cookie: 2, offset: 4096, length: 3})
	c.writeAll(append(b, "abc"...))
	c.optReplies(optStructuredReply)
	c.optReplies(optSetMetaContext)
	if rs := c.optReplies(optGo); rs[len(rs)-1].typ != repAck {
		t.Fatalf("GO: %v", rs)
	}
	c.structured = true
	if rep := c.recv(); rep.cookie != 1 || string(rep.data) != "pipelined" {
		t.Fatalf("pipelined read: %v %q", rep, rep.data)
	}
	if rep := c.recv(); rep.cookie != 2 || rep.errno != 0 || string(m.bytes(4096, 3)) != "abc" {
		t.Fatalf("pipelined write: %v", rep)
	}
}

// shortBackend reads and writes one byte less than asked, without error.
type shortBackend struct{ *memBackend }

func (s shortBackend) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.memBackend.ReadAt(p, off)
	return max(n-1, 0), err
}

func (s shortBackend) WriteAt(p []byte, off int64) (int, error) {
	n, err := s.memBackend.WriteAt(p, off)
	return max(n-1, 0), err
}

func TestTransmit_shortIO(t *testing.T) {
	exp := newExports().add(Export{Name: "short", Backend: shortBackend{newMem(1 << 20)}})
	ts := startServer(t, exp, Options{})
	c := connect(t, "tcp", ts.tcp, "short", connectOpts{structured: true})
	if rep := c.do(request{typ: cmdRead, cookie: 1, length: 4096}, nil); rep.errno != errIO || !strings.Contains(rep.msg, "short read") {
		t.Fatalf("short read: %v, want EIO", rep)
	}
	if rep := c.do(request{typ: cmdWrite, cookie: 2, length: 4096}, make([]byte, 4096)); rep.errno != errIO || !strings.Contains(rep.msg, "short write") {
		t.Fatalf("short write: %v, want EIO", rep)
	}
}

// holdFlush makes the backend's next Flush signal entered and then block
// until release is closed: a request kept in flight on purpose.
func holdFlush(m *memBackend) (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	m.hook = func(op string, off, n int64) error {
		if op == "flush" {
			close(entered)
			<-release
		}
		return nil
	}
	return entered, release
}

// TestConn_observeOutlier: one request that took milliseconds (its
// goroutine preempted on a busy machine) does not move the reader's
// requests to workers; a backend slow request after request still does.
func TestConn_observeOutlier(t *testing.T) {
	c := &conn{}
	r := &request{typ: cmdWrite, length: 4096}
	for range 100 {
		c.observe(int64(5 * time.Microsecond))
	}
	c.observe(int64(10 * time.Millisecond))
	if !c.inline(r) {
		t.Fatalf("one 10 ms request among 5 µs ones moved I/O to workers (average %v)", time.Duration(c.slow.Load()))
	}
	for range 3 {
		c.observe(int64(10 * time.Millisecond))
	}
	if c.inline(r) {
		t.Fatalf("four 10 ms requests in a row left I/O on the reader (average %v)", time.Duration(c.slow.Load()))
	}
}
