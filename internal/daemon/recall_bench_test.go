package daemon_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// BenchmarkTableMove: one iteration moves a 64 MiB volume's table to the
// other of two memory regions (load + resume), with 0, 1 or 4 client
// processes streaming stores into it through Access, so every move with
// clients recalls their mappings and they map again. The 0-client rows
// are the peer: the same swap without stop-the-world. Reported: ms per
// move, and for the clients the longest single Access they saw is not
// measured here (see the recall metrics).
func BenchmarkTableMove(b *testing.B) {
	for _, clients := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) { benchMove(b, clients) })
	}
}

func benchMove(b *testing.B, clients int) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: userfaultfd on another process's memory")
	}
	const size = 64 << 20
	e := newEnv(b)
	regions := [2]string{e.region("a", size), e.region("b", size)}
	e.create("vol", linear(regions[0], size/512))
	var cs []*clienttest.Child
	for i := 0; i < clients; i++ {
		c := clienttest.Start(b, e.d.SessionSocketPath())
		part := int64(size / clients)
		c.Do("map vol %d %d rw", int64(i)*part, part)
		c.Do("access-stream")
		cs = append(cs, c)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 1; i <= b.N; i++ {
		e.must("load", e.c.Load(bg, "vol", wire.Load{Table: linear(regions[i%2], size/512)}))
		e.must("resume", e.c.Resume(bg, "vol"))
	}
	b.StopTimer()
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N)/1e3, "ms/move")
	for _, c := range cs {
		c.Do("stop")
		c.Do("quit")
	}
}
