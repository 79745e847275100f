package dm_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// TestDevice_swapUnderIO swaps between tables that map the same bytes in
// different ways while writers hammer the device. Every writer owns a
// region and checks its own writes read back; at the end the backing bytes
// equal the writers' models. A write lost in a swap, or one that reached a
// closed table, fails the test; -race checks the locking.
func TestDevice_swapUnderIO(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	r := newRig(t)
	tables := []string{
		"0 2048 fake mem 0",
		"0 1000 fake mem 0\n1000 1048 fake mem 1000",
		"0 7 fake mem 0\n7 1 fake mem 7\n8 2040 fake mem 8",
	}
	d := r.create(t, "vol", tables[0])
	const writers, region = 4, 64 * 1024
	models := make([][]byte, writers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for w := range writers {
		models[w] = make([]byte, region)
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(w)))
			base := int64(w * region)
			buf := make([]byte, 8192)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := rng.Int64N(region - 8192)
				n := 1 + rng.Int64N(8192)
				p := buf[:n]
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
				if _, err := d.WriteAt(p, base+off); err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				copy(models[w][off:], p)
				got := make([]byte, n)
				if _, err := d.ReadAt(got, base+off); err != nil {
					errs <- fmt.Errorf("writer %d: read: %w", w, err)
					return
				}
				if !bytes.Equal(got, p) {
					errs <- fmt.Errorf("writer %d: read back differs at %d+%d", w, base+off, n)
					return
				}
			}
		}(w)
	}
	go func() {
		rng := rand.New(rand.NewPCG(uint64(seed), 99))
		for i := 0; i < 300; i++ {
			if err := d.Load(tables[rng.IntN(len(tables))]); err != nil {
				errs <- err
				break
			}
			if rng.IntN(4) == 0 {
				if err := d.Suspend(dm.SuspendOptions{}); err != nil {
					errs <- err
					break
				}
				time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
			}
			if err := d.Resume(); err != nil {
				errs <- err
				break
			}
		}
		close(stop)
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for w := range writers {
		if !bytes.Equal(r.mem.Bytes()[w*region:(w+1)*region], models[w]) {
			t.Fatalf("writer %d: backing bytes differ from the model", w)
		}
	}
	if got := hooks.closes.Load(); got == 0 {
		t.Fatal("no table was ever closed: swaps did not happen")
	}
}

// TestTable_splitProperty builds random multi-line tables over one memory
// device (lines may map overlapping device ranges) and checks random I/O
// against a model that applies the same line mapping to a plain slice.
func TestTable_splitProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		r := newRig(t)
		nlines := rapid.IntRange(1, 6).Draw(rt, "lines")
		type line struct{ start, len, devOff int64 }
		var lines []line
		var text bytes.Buffer
		var start int64
		for i := range nlines {
			n := rapid.Int64Range(1, 300).Draw(rt, fmt.Sprintf("len%d", i))
			off := rapid.Int64Range(0, 2048-n).Draw(rt, fmt.Sprintf("off%d", i))
			lines = append(lines, line{start, n, off})
			fmt.Fprintf(&text, "%d %d fake mem %d\n", start, n, off)
			start += n
		}
		d, err := r.m.Create("vol", dm.CreateOptions{Table: text.String()})
		if err != nil {
			rt.Fatal(err)
		}
		model := bytes.Clone(r.mem.Bytes())
		phys := func(logical int64) int64 { // byte offset -> device byte offset
			for _, l := range lines {
				if logical < (l.start+l.len)*512 {
					return l.devOff*512 + logical - l.start*512
				}
			}
			panic("beyond table")
		}
		size := start * 512
		for i := range rapid.IntRange(1, 40).Draw(rt, "ops") {
			off := rapid.Int64Range(0, size-1).Draw(rt, fmt.Sprintf("off%d", i))
			n := rapid.Int64Range(1, min(size-off, 3000)).Draw(rt, fmt.Sprintf("n%d", i))
			switch rapid.IntRange(0, 2).Draw(rt, fmt.Sprintf("op%d", i)) {
			case 0:
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(i + j + 1)
				}
				if _, err := d.WriteAt(p, off); err != nil {
					rt.Fatal(err)
				}
				for j := range n {
					model[phys(off+j)] = p[j]
				}
			case 1:
				if err := d.WriteZeroes(off, n); err != nil {
					rt.Fatal(err)
				}
				for j := range n {
					model[phys(off+j)] = 0
				}
			case 2:
				got := make([]byte, n)
				if _, err := d.ReadAt(got, off); err != nil {
					rt.Fatal(err)
				}
				for j := range n {
					if got[j] != model[phys(off+j)] {
						rt.Fatalf("read %d+%d: byte %d is %d, model says %d", off, n, j, got[j], model[phys(off+j)])
					}
				}
			}
		}
		if !bytes.Equal(r.mem.Bytes(), model) {
			rt.Fatal("device bytes differ from the model")
		}
	})
}
