package checkpoint

import (
	"math/bits"
	"sync/atomic"
)

// bitset is a set of chunk indexes whose bits may be set, cleared and
// read concurrently.
type bitset []atomic.Uint64

func newBitset(n int64) bitset { return make(bitset, (n+63)/64) }

func (b bitset) has(i int64) bool { return b[i/64].Load()&(1<<(i%64)) != 0 }

// add sets bit i and reports whether it was clear.
func (b bitset) add(i int64) bool {
	m := uint64(1) << (i % 64)
	return b[i/64].Or(m)&m == 0
}

func (b bitset) remove(i int64) { b[i/64].And(^(uint64(1) << (i % 64))) }

// next returns the first member at or after i, or -1.
func (b bitset) next(i int64) int64 {
	for w := i / 64; w < int64(len(b)); w++ {
		x := b[w].Load()
		if w == i/64 {
			x &^= 1<<(i%64) - 1
		}
		if x != 0 {
			return w*64 + int64(bits.TrailingZeros64(x))
		}
	}
	return -1
}

// count is the number of members.
func (b bitset) count() int64 {
	var n int64
	for i := range b {
		n += int64(bits.OnesCount64(b[i].Load()))
	}
	return n
}

// fill makes every index below n a member.
func (b bitset) fill(n int64) {
	for w := range b {
		lo := int64(w) * 64
		switch {
		case n >= lo+64:
			b[w].Store(^uint64(0))
		case n > lo:
			b[w].Store(1<<(n-lo) - 1)
		default:
			b[w].Store(0)
		}
	}
}
