package session_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// BenchmarkFirstWriteAfterSnapshot: a client process stores once into
// every chunk of a mapped 32 MiB volume right after a snapshot, so every
// store is a copy-on-write fault (copy the chunk, un-protect it, wake the
// writer). Reported: per-fault latency as the writer sees it (p50, p99)
// and the copy rate. Compare with bench/uffdwp, the raw round trip.
func BenchmarkFirstWriteAfterSnapshot(b *testing.B) {
	for _, chunk := range []int64{4 << 10, 64 << 10, 2 << 20} {
		b.Run(fmt.Sprintf("chunk=%dKiB", chunk>>10), func(b *testing.B) { benchFirstWrite(b, chunk) })
	}
}

func benchFirstWrite(b *testing.B, chunk int64) {
	const size = 32 << 20
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	r := newRigSized(b, size+size/4, "mem", "cow")
	vol, err := r.m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot-origin %s\n", size/512, r.path("mem"))})
	if err != nil {
		b.Fatal(err)
	}
	c := clienttest.Start(b, r.srv.Socket())
	c.Do("map vol 0 %d rw", size)
	c.Do("timed 4096") // populate every page
	var p50, p99, sum time.Duration
	var faults int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := r.m.Create("snap", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot %s %s N %d\n", size/512, r.path("mem"), r.path("cow"), chunk/512)}); err != nil {
			b.Fatal(err)
		}
		if err := r.srv.Protect(vol); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var n int
		var q50, q99, mx, s int64
		fmt.Sscan(c.Do("timed %d", chunk), &n, &q50, &q99, &mx, &s)
		b.StopTimer()
		faults += n
		p50 += time.Duration(q50)
		p99 += time.Duration(q99)
		sum += time.Duration(s)
		if err := r.m.Remove("snap", dm.RemoveOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(p50.Nanoseconds())/float64(b.N)/1e3, "p50-µs/fault")
	b.ReportMetric(float64(p99.Nanoseconds())/float64(b.N)/1e3, "p99-µs/fault")
	b.ReportMetric(float64(int64(faults)*chunk)/sum.Seconds()/1e6, "MB/s")
	c.Do("quit")
}
