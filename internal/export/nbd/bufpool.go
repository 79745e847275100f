package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers for requests served by workers, pooled by power-of-two
// size class from 4 KiB to the maximum payload.
const (
	minBufShift = 12
	maxBufShift = 25 // maxPayload
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuf returns a buffer of length n (n <= maxPayload).
func getBuf(n int) *[]byte {
	k := bufClass(n)
	if p, ok := bufPools[k].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(k+minBufShift))
	return &b
}

func putBuf(p *[]byte) {
	k := bufClass(cap(*p))
	if cap(*p) != 1<<(k+minBufShift) {
		return // not one of ours
	}
	bufPools[k].Put(p)
}
