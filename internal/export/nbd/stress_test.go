package nbd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// Stress layout: each connection owns a private region, split into slots
// of which at most one has a request in flight, so a plain byte-slice
// model predicts every read exactly; all connections also write and read
// a shared region concurrently, where each 512-byte sector carries a
// stamp (its own offset, the writer, a checksum) so a read can tell a
// whole sector from a torn or misplaced one.
const (
	stressConns   = 8
	stressSlot    = 16 << 10
	stressSlots   = 16
	stressPrivate = stressSlot * stressSlots
	stressShared  = 1 << 20
	stressDepth   = 16
)

func TestStress_concurrentClients(t *testing.T) {
	ops := 1500
	if testing.Short() {
		ops = 300
	}
	seed := rand.Uint64()
	t.Logf("seed %d (%d connections, %d requests each, up to %d in flight)", seed, stressConns, ops, stressDepth)
	m := newMem(stressShared + stressConns*stressPrivate)
	ts := startServer(t, newExports().add(Export{Name: "disk", Backend: m}), Options{MaxInFlight: 4 << 20})
	var mu sync.Mutex
	flushes := 0
	var wg sync.WaitGroup
	for i := range stressConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			network, addr := "tcp", ts.tcp
			if i%2 == 1 {
				network, addr = "unix", ts.unix
			}
			c := connect(t, network, addr, "disk", connectOpts{structured: i%4 < 2})
			n, _ := runStressClient(t, c, i, ops, rand.New(rand.NewPCG(seed, uint64(i))))
			mu.Lock()
			flushes += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got := m.flushes.Load(); got < int64(flushes) {
		t.Fatalf("backend saw %d flushes for %d FLUSH and FUA requests", got, flushes)
	}
}

// stressOp is a request in flight and what its reply must be.
type stressOp struct {
	r    request
	slot int    // private slot, or -1
	want []byte // expected read data in the private region
}

// runStressClient issues ops random requests with up to stressDepth in
// flight, checks every reply and returns how many requests must have
// caused a backend flush, and the model of its private region.
func runStressClient(t *testing.T, c *rawClient, id, ops int, rnd *rand.Rand) (int, []byte) {
	base := int64(stressShared + id*stressPrivate)
	model := make([]byte, stressPrivate)
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		inflight = map[uint64]*stressOp{}
		busy     [stressSlots]bool
		failed   string
	)
	done := make(chan struct{})
	go func() { // receiver
		defer close(done)
		for range ops {
			rep := c.recv()
			mu.Lock()
			op, ok := inflight[rep.cookie]
			delete(inflight, rep.cookie)
			failed = checkStressReply(rep, op, ok)
			if ok && op.slot >= 0 {
				busy[op.slot] = false
			}
			cond.Broadcast()
			stop := failed != ""
			mu.Unlock()
			if stop {
				return // fail now rather than wait for replies that will not come
			}
		}
	}()
	flushes := 0
	for i := range ops {
		mu.Lock()
		for len(inflight) >= stressDepth && failed == "" {
			cond.Wait()
		}
		op := &stressOp{r: request{cookie: uint64(id)<<32 | uint64(i)}, slot: -1}
		var payload []byte
		switch k := rnd.IntN(10); {
		case k < 4: // private: exact model, one request per slot
			s := rnd.IntN(stressSlots)
			for busy[s] && failed == "" {
				cond.Wait()
			}
			busy[s], op.slot = true, s
			off := s*stressSlot + rnd.IntN(stressSlot/512)*512
			n := 512 * (1 + rnd.IntN((s+1)*stressSlot/512-off/512))
			op.r.offset, op.r.length = uint64(base)+uint64(off), uint32(n)
			switch rnd.IntN(4) {
			case 0, 1:
				op.r.typ, payload = cmdWrite, pattern(n, rnd.Uint64())
				if rnd.IntN(8) == 0 {
					op.r.flags = cmdFlagFUA
					flushes++
				}
				copy(model[off:], payload)
			case 2:
				op.r.typ, op.want = cmdRead, append([]byte(nil), model[off:off+n]...)
			case 3:
				op.r.typ = cmdWriteZeroes
				clear(model[off : off+n])
			}
		case k < 8: // shared: stamped sectors, overlapping writers
			sectors := 1 + rnd.IntN(16)
			off := rnd.IntN(stressShared/512-sectors) * 512
			op.r.offset, op.r.length = uint64(off), uint32(sectors*512)
			if rnd.IntN(2) == 0 {
				op.r.typ, payload = cmdWrite, stampSectors(off, sectors, id, rnd.Uint64())
			} else {
				op.r.typ = cmdRead
			}
		default:
			op.r.typ = cmdFlush
			flushes++
		}
		inflight[op.r.cookie] = op
		msg := failed
		mu.Unlock()
		if msg != "" {
			break
		}
		c.send(op.r, payload)
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	if failed != "" {
		t.Errorf("connection %d: %s", id, failed)
	}
	if failed == "" && len(inflight) != 0 {
		t.Errorf("connection %d: %d requests never answered", id, len(inflight))
	}
	return flushes, model
}

func checkStressReply(rep reply, op *stressOp, ok bool) string {
	switch {
	case !ok:
		return fmt.Sprintf("reply for cookie %x that is not in flight (lost or duplicated)", rep.cookie)
	case rep.errno != 0:
		return fmt.Sprintf("%s at %d: errno %d %s", cmdName(op.r.typ), op.r.offset, rep.errno, rep.msg)
	case op.r.typ != cmdRead:
		return ""
	case len(rep.data) != int(op.r.length):
		return fmt.Sprintf("read of %d bytes returned %d", op.r.length, len(rep.data))
	case op.want != nil:
		if !bytes.Equal(rep.data, op.want) {
			return fmt.Sprintf("private read at %d: data differs from the model", op.r.offset)
		}
	default:
		for s := 0; s < len(rep.data); s += 512 {
			if msg := checkStamp(rep.data[s:s+512], int(op.r.offset)+s); msg != "" {
				return msg
			}
		}
	}
	return ""
}

// stampSectors makes sectors that name their own offset and writer and
// carry a checksum of the rest.
func stampSectors(off, sectors, writer int, salt uint64) []byte {
	b := make([]byte, sectors*512)
	for s := range sectors {
		sec := b[s*512 : (s+1)*512]
		binary.BigEndian.PutUint64(sec, uint64(off+s*512))
		binary.BigEndian.PutUint64(sec[8:], uint64(writer)<<48|salt>>16)
		copy(sec[24:], pattern(488, salt+uint64(s)))
		binary.BigEndian.PutUint64(sec[16:], sum(sec[24:]))
	}
	return b
}

func checkStamp(sec []byte, off int) string {
	if bytes.Equal(sec, make([]byte, 512)) {
		return "" // never written
	}
	if got := int(binary.BigEndian.Uint64(sec)); got != off {
		return fmt.Sprintf("sector at %d holds the stamp of sector %d", off, got)
	}
	if binary.BigEndian.Uint64(sec[16:]) != sum(sec[24:]) {
		return fmt.Sprintf("sector at %d is torn (checksum mismatch)", off)
	}
	return ""
}

func sum(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}
