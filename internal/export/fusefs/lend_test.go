package fusefs_test

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
)

// lender is a device whose reads are lent from buffers of its own, full
// of fill, which it overwrites with junk as soon as a loan ends: a reply
// written after the loan ended would carry the junk.
type lender struct {
	fusefs.Backend
	fill  byte
	loans *loans
}

// loans counts the loans of every open file.
type loans struct {
	mu             sync.Mutex
	lent, returned int
}

func (l *lender) LendRead(off, n int64) ([]byte, func(), bool) {
	buf := bytes.Repeat([]byte{l.fill}, int(n))
	l.loans.mu.Lock()
	l.loans.lent++
	l.loans.mu.Unlock()
	return buf, func() {
		for i := range buf {
			buf[i] = 0xEE
		}
		l.loans.mu.Lock()
		l.loans.returned++
		l.loans.mu.Unlock()
	}, true
}

func (l *loans) counts() (lent, returned int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lent, l.returned
}

// Ensure that a read served from lent memory is answered before the
// memory goes back, and that every loan ends: go-fuse gives other read
// results back before it writes the reply.
func TestFile_readsLentMemory(t *testing.T) {
	l := &loans{}
	r := newRig(t, fusefs.Options{Open: func(dev *dm.Device) (fusefs.Backend, func(), error) {
		if err := dev.Open(); err != nil {
			return nil, nil, err
		}
		return &lender{Backend: dev, fill: 'L', loans: l}, func() { dev.Close() }, nil
	}})
	r.create("vol", "0 8192 linear a 0", false)
	r.put(0, bytes.Repeat([]byte{'D'}, 4096))
	f := r.open("vol", os.O_RDONLY)

	for _, c := range []struct {
		off int64
		n   int
	}{{0, 4096}, {8192, 64 << 10}, {mib, mib}, {4*mib - 4096, 4096}} {
		got := make([]byte, c.n)
		if n, err := f.ReadAt(got, c.off); n != c.n || err != nil {
			t.Fatalf("read %d at %d: %d, %v", c.n, c.off, n, err)
		}
		if i := bytes.IndexFunc(got, func(r rune) bool { return r != 'L' }); i >= 0 {
			t.Fatalf("read %d at %d: byte %d is %#x, want the lent memory's 'L': the reply was written after the loan ended", c.n, c.off, i, got[i])
		}
	}
	// Below lendMin, the device is read.
	small := make([]byte, 512)
	if _, err := f.ReadAt(small, 0); err != nil || small[0] != 'D' {
		t.Errorf("read of 512 bytes: %v, %q; want the device's data", err, small[:1])
	}
	deadline := time.Now().Add(time.Minute)
	for {
		lent, returned := l.counts()
		if lent == 4 && returned == lent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d loans, %d ended after a minute; want 4, all ended", lent, returned)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Ensure that a device lends the memory its table maps, its own or that
// of a mapped device below, and that a loan holds off a suspend (and so
// a table swap) of the device whose memory it is until it ends, as a read
// under way does.
func TestDevice_lendRead(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	dev := r.create("vol", "0 8192 linear a 0", false)
	plain := r.create("plain", "0 8192 linear b 0", false)
	high := r.create("high", "0 8184 linear /dev/mapper/vol 8", false)
	r.put(4096, []byte("lent"))

	for _, c := range []struct {
		name string
		dev  *dm.Device
		off  int64
	}{{"vol", dev, 4096}, {"a device stacked on vol", high, 4096 - 8*512}} {
		mem, release, ok := c.dev.LendRead(c.off, 8192)
		if !ok || len(mem) != 8192 || string(mem[:4]) != "lent" {
			t.Fatalf("LendRead of %s: %d bytes %q, ok %v; want 8192 bytes of vol", c.name, len(mem), mem[:min(4, len(mem))], ok)
		}
		done := make(chan error, 1)
		go func() { done <- dev.Suspend(dm.SuspendOptions{}) }()
		select {
		case err := <-done:
			t.Fatalf("suspend of vol returned (%v) while memory of %s was lent", err, c.name)
		case <-time.After(200 * time.Millisecond):
		}
		release()
		if err := <-done; err != nil {
			t.Fatalf("suspend after the loan ended: %v", err)
		}
		if err := dev.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	if mem, _, ok := plain.LendRead(0, 4096); ok {
		t.Errorf("a line that is not DAX-capable lent %d bytes; want a copy (ReadAt)", len(mem))
	}
	if _, _, ok := dev.LendRead(4*mib, 4096); ok {
		t.Error("LendRead at the end lent memory")
	}
}

// Ensure that reads racing table swaps through the FUSE file see the
// table live when they began, whole: a read lent from a device's memory
// never carries what that memory held after the table moved off it. The
// device maps one half of a or the other (a table must stay DAX-capable).
func TestFile_lentReadsAcrossSwaps(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	const half = 2 * mib
	fill := func(off int64, c byte) { r.put(off, bytes.Repeat([]byte{c}, half)) }
	fill(0, 'A')
	fill(half, 'B')
	first, second := "0 4096 linear a 0", "0 4096 linear a 4096"
	dev := r.create("vol", first, false)
	f := r.open("vol", os.O_RDONLY)

	stop := make(chan struct{})
	bad := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, mib)
		for off := int64(0); ; off = (off + mib) % half {
			select {
			case <-stop:
				return
			default:
			}
			n, err := f.ReadAt(buf, off)
			if err != nil || n != len(buf) {
				bad <- fmt.Sprintf("read at %d: %d, %v", off, n, err)
				return
			}
			if c := buf[0]; (c != 'A' && c != 'B') || bytes.Count(buf, buf[:1]) != len(buf) {
				bad <- fmt.Sprintf("read at %d starts %q and is not all of one half: a read mixed tables or saw memory after the swap", off, buf[:1])
				return
			}
		}
	}()
	swap := func(table string) {
		if err := dev.Load(table); err != nil {
			t.Fatal(err)
		}
		if err := dev.Suspend(dm.SuspendOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := dev.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	for range 30 {
		swap(second)
		fill(0, 'C') // no table's memory now
		fill(0, 'A')
		swap(first)
	}
	close(stop)
	wg.Wait()
	select {
	case msg := <-bad:
		t.Fatal(msg)
	default:
	}
}
