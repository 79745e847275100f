package nbd

import (
	"testing"
)

// Benchmarks: one connection over a unix socket, a pipelined raw client
// keeping depth requests in flight. Compare with nbdkit and qemu-nbd
// through bench/nbd.sh; these are for profiling the server alone.

func benchIO(b *testing.B, typ uint16, size uint32, depth int, structured bool) {
	m := newMem(256 << 20)
	ts := startServer(b, newExports().add(Export{Name: "disk", Backend: m}), Options{Logger: discardLogger()})
	c := connect(b, "unix", ts.unix, "disk", connectOpts{structured: structured})
	var payload []byte
	if typ == cmdWrite {
		payload = pattern(int(size), 1)
	}
	slots := uint64(m.Size()) / uint64(size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	sent, got := 0, 0
	for got < b.N {
		for sent < b.N && sent-got < depth {
			c.send(request{typ: typ, cookie: uint64(sent), offset: uint64(sent*7919) % slots * uint64(size), length: size}, payload)
			sent++
		}
		if rep := c.recv(); rep.errno != 0 {
			b.Fatalf("reply %v", rep)
		}
		got++
	}
}

func BenchmarkServer_read4k(b *testing.B)    { benchIO(b, cmdRead, 4096, 16, true) }
func BenchmarkServer_write4k(b *testing.B)   { benchIO(b, cmdWrite, 4096, 16, true) }
func BenchmarkServer_read1M(b *testing.B)    { benchIO(b, cmdRead, 1<<20, 16, true) }
func BenchmarkServer_write1M(b *testing.B)   { benchIO(b, cmdWrite, 1<<20, 16, true) }
func BenchmarkServer_read4kQD1(b *testing.B) { benchIO(b, cmdRead, 4096, 1, false) }
