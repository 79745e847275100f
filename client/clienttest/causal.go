package clienttest

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/daxsnap/daxsnap/client"
)

// The causal log: writers in several processes append records to a shared
// volume so that a snapshot of it can be checked for being prefix-closed
// (crash-consistent), dependencies across writers included.
//
// Layout: page 0 holds progress[w] (8 bytes each): the last record writer
// w has completed. Writer w owns the pages [1+w*R, 1+(w+1)*R), with
// R = (pages-1)/N, as a ring of 64-byte records; record s (1, 2, ...) goes
// to slot (s-1) mod K. A record is seq, deps[0..N) (each writer's progress
// as this writer read it before writing), check (a hash of the rest,
// written last). Writer w: read every progress, write the record, then
// progress[w] = s.
//
// So record (w, s) depends on record (v, deps[v]) of every writer, and on
// its own predecessors; and progress[w] = s depends on record (w, s). An
// image is prefix-closed iff for the last complete record S_w of every
// writer: every slot holds the last record ≤ S_w written there (one torn
// record, S_w+1, allowed), every record's deps[v] ≤ S_v, and progress[w]
// ≤ S_w.

const (
	recordSize = 64
	// MaxCausalWriters is how many writers fit a record.
	MaxCausalWriters = 6
)

type causalLayout struct {
	n, slots     int
	regionPages  int
	progressBase int
}

func layout(size, n int) (causalLayout, error) {
	if n < 1 || n > MaxCausalWriters {
		return causalLayout{}, fmt.Errorf("%d writers: want 1..%d", n, MaxCausalWriters)
	}
	r := (size/pageSize - 1) / n
	if r < 1 {
		return causalLayout{}, fmt.Errorf("%d bytes are too few for %d writers", size, n)
	}
	return causalLayout{n: n, regionPages: r, slots: r * pageSize / recordSize}, nil
}

func (l causalLayout) record(w, slot int) int {
	return (1+w*l.regionPages)*pageSize + slot*recordSize
}

func check(seq uint64, deps []uint64) uint64 {
	h := seq*0x9e3779b97f4a7c15 ^ 0x5bd1e995
	for _, d := range deps {
		h = (h ^ d) * 0x100000001b3
	}
	return h | 1 // never 0: an all-zero record is an empty slot
}

func word64(mem []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[off])) }

// causalWriter is writer w of a causal log in mem.
type causalWriter struct {
	mem  []byte
	l    causalLayout
	w    int
	s    uint64
	deps []uint64
}

func newCausalWriter(mem []byte, w, n int) (*causalWriter, error) {
	l, err := layout(len(mem), n)
	if err != nil {
		return nil, err
	}
	if w < 0 || w >= n {
		return nil, fmt.Errorf("writer %d of %d", w, n)
	}
	return &causalWriter{mem: mem, l: l, w: w, deps: make([]uint64, n)}, nil
}

// step appends one record.
func (c *causalWriter) step() {
	mem := c.mem
	c.s++
	for v := range c.deps {
		c.deps[v] = atomic.LoadUint64(word64(mem, 8*v))
	}
	rec := c.l.record(c.w, int((c.s-1)%uint64(c.l.slots)))
	for v, d := range c.deps {
		binary.LittleEndian.PutUint64(mem[rec+8+8*v:], d)
	}
	binary.LittleEndian.PutUint64(mem[rec:], c.s)
	atomic.StoreUint64(word64(mem, rec+8+8*MaxCausalWriters), check(c.s, c.deps))
	atomic.StoreUint64(word64(mem, 8*c.w), c.s)
}

// writeCausal is writer w of n: it appends records until stop and returns
// how many it completed.
func writeCausal(mem []byte, w, n int, stop *atomic.Bool) uint64 {
	c, err := newCausalWriter(mem, w, n)
	if err != nil {
		return 0
	}
	for !stop.Load() {
		c.step()
	}
	return c.s
}

// accessCausal is writeCausal through m.Access, 16 records per Access,
// so that a recall (or a daemon restart) may come between any two runs.
func accessCausal(ctx context.Context, m *client.Mapping, w, n int, stop *atomic.Bool) uint64 {
	var c *causalWriter
	for !stop.Load() {
		err := m.Access(ctx, func(mem []byte) error {
			if c == nil {
				var err error
				if c, err = newCausalWriter(mem, w, n); err != nil {
					return err
				}
			}
			c.mem = mem
			for range 16 {
				c.step()
			}
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "access-causal:", err)
			break
		}
	}
	if c == nil {
		return 0
	}
	return c.s
}

// CheckCausal checks that img, a whole-volume image of n causal writers,
// is prefix-closed. It returns each writer's last complete record S_w, or
// an error describing the first violation.
func CheckCausal(img []byte, n int) ([]uint64, error) {
	l, err := layout(len(img), n)
	if err != nil {
		return nil, err
	}
	type rec struct {
		seq   uint64
		deps  []uint64
		valid bool
	}
	recs := make([][]rec, n)
	last := make([]uint64, n)
	for w := 0; w < n; w++ {
		recs[w] = make([]rec, l.slots)
		for i := range recs[w] {
			off := l.record(w, i)
			r := rec{seq: binary.LittleEndian.Uint64(img[off:]), deps: make([]uint64, n)}
			for v := range r.deps {
				r.deps[v] = binary.LittleEndian.Uint64(img[off+8+8*v:])
			}
			c := binary.LittleEndian.Uint64(img[off+8+8*MaxCausalWriters:])
			r.valid = c == check(r.seq, r.deps) || (c == 0 && r.seq == 0 && allZero(r.deps))
			if r.valid {
				last[w] = max(last[w], r.seq)
			}
			recs[w][i] = r
		}
	}
	slots := uint64(l.slots)
	for w := 0; w < n; w++ {
		S := last[w]
		for i, r := range recs[w] {
			// The last record ≤ S written to slot i (0: none).
			want := uint64(0)
			if S >= uint64(i)+1 {
				want = S - (S-uint64(i)-1)%slots
			}
			if !r.valid {
				if uint64(i) == S%slots { // the record after S, torn by the cut
					continue
				}
				return last, fmt.Errorf("writer %d: slot %d is torn but is not the slot of the record after its last complete one (%d)", w, i, S)
			}
			if r.seq != want {
				return last, fmt.Errorf("writer %d is not a prefix: slot %d holds record %d, want %d (last complete record %d)", w, i, r.seq, want, S)
			}
			for v, d := range r.deps {
				if d > last[v] {
					return last, fmt.Errorf("record %d of writer %d depends on record %d of writer %d, which the image lacks (it ends at %d)", r.seq, w, d, v, last[v])
				}
			}
		}
		if p := binary.LittleEndian.Uint64(img[8*w:]); p > S {
			return last, fmt.Errorf("progress of writer %d says %d, but its records end at %d", w, p, S)
		}
	}
	return last, nil
}

func allZero(v []uint64) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}
