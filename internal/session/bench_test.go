package session_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
	_, err := r.m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot-origin %s\n", size/512, r.path("mem"))})
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

// benchSize is the mapped volume size of the no-snapshot and pause
// benchmarks: DAXBENCH_SIZE bytes (suffix M or G), else def.
func benchSize(def int64) int64 {
	s := os.Getenv("DAXBENCH_SIZE")
	if s == "" {
		return def
	}
	mul := int64(1)
	switch s[len(s)-1] {
	case 'G', 'g':
		mul, s = 1<<30, s[:len(s)-1]
	case 'M', 'm':
		mul, s = 1<<20, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return def
	}
	return n * mul
}

// BenchmarkMappedWrites: 4 KiB copies (sequential, then random order)
// into a client mapping of a snapshot-origin volume with no snapshot,
// and the same copies into a plain memfd mapping of the same size, in
// the same iteration. Both sides are pre-faulted by one store per page
// first, so neither pays page allocation. Reported: MB/s of each and
// their ratio (goal ≥ 0.95).
func BenchmarkMappedWrites(b *testing.B) {
	size := benchSize(1 << 30)
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	r := newRigSized(b, size, "mem")
	if _, err := r.m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot-origin %s\n", size/512, r.path("mem"))}); err != nil {
		b.Fatal(err)
	}
	_, mp := dialMap(b, r, size)
	fd, err := unix.MemfdCreate("daxbench", 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, size); err != nil {
		b.Fatal(err)
	}
	plain, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(plain)
	dax := mp.Bytes()
	for off := 0; off < int(size); off += 4096 { // pre-fault both the same way
		dax[off] = 1
		plain[off] = 1
	}
	src := make([]byte, 4096)
	for i := range src {
		src[i] = byte(i*7 + 1)
	}
	pages := int(size / 4096)
	seq := make([]int, pages)
	for i := range seq {
		seq[i] = i * 4096
	}
	rnd := append([]int(nil), seq...)
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(rnd), func(i, j int) { rnd[i], rnd[j] = rnd[j], rnd[i] })
	pass := func(mem []byte, order []int) time.Duration {
		t0 := time.Now()
		for _, off := range order {
			copy(mem[off:off+4096], src)
		}
		return time.Since(t0)
	}
	for _, pc := range []struct {
		name  string
		order []int
	}{{"seq", seq}, {"rand", rnd}} {
		b.Run(fmt.Sprintf("%s/size=%dMiB", pc.name, size>>20), func(b *testing.B) {
			b.SetBytes(2 * size)
			var td, tp time.Duration
			for i := 0; i < b.N; i++ {
				// Alternate which side goes first, so neither always
				// follows the other's cache state.
				if i%2 == 0 {
					td += pass(dax, pc.order)
					tp += pass(plain, pc.order)
				} else {
					tp += pass(plain, pc.order)
					td += pass(dax, pc.order)
				}
			}
			dmb := float64(size) * float64(b.N) / td.Seconds() / 1e6
			pm := float64(size) * float64(b.N) / tp.Seconds() / 1e6
			b.ReportMetric(dmb, "dax-MB/s")
			b.ReportMetric(pm, "memfd-MB/s")
			b.ReportMetric(dmb/pm, "ratio")
		})
	}
	if n := r.srv.Stats().Faults.Load(); n != 0 {
		b.Logf("%d write faults with no snapshot", n)
	}
}

// BenchmarkSnapshotPause: a client process maps a whole volume (1 and
// 4 GiB, DAXBENCH_PAUSE_SIZES in GiB to change) and stores into it once
// every 64 KiB, pass after pass, each store timed; meanwhile a snapshot
// (64 KiB chunks) is created, whose activation cuts (Server.Cut: hold,
// sweep, activate, release). The writer stops as soon as the sweep has ended (its
// held store completes first), so the copy-on-write store only needs room
// for the few chunks first written after the cut: it is a transient one
// of at most 1 GiB, and a volume of n GiB needs n GiB of /dev/shm, not 2n.
// Each iteration starts from the same state: the mapping populated and
// writable (it is remade and populated again after each snapshot).
// Reported: the sweep time (Stats.SweepNanos), the longest any single
// store of the writer took (held by the sweep, plus its copy-on-write
// fault), the held-fault time the server counted, and the bytes copied
// into the snapshot before the writer stopped.
func BenchmarkSnapshotPause(b *testing.B) {
	sizes := []int64{1, 4}
	if s := os.Getenv("DAXBENCH_PAUSE_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			if n, err := strconv.ParseInt(f, 10, 64); err == nil && n > 0 {
				sizes = append(sizes, n)
			}
		}
	}
	for _, g := range sizes {
		b.Run(fmt.Sprintf("size=%dGiB", g), func(b *testing.B) { benchPause(b, g<<30) })
	}
}

func benchPause(b *testing.B, size int64) {
	const chunk, stride = 64 << 10, 64 << 10
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	r := newRigSized(b, size, "mem", "cow")
	cowSize := min(size, 1<<30)
	if err := os.Truncate(r.path("cow"), cowSize); err != nil {
		b.Fatal(err)
	}
	_, err := r.m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot-origin %s\n", size/512, r.path("mem"))})
	if err != nil {
		b.Fatal(err)
	}
	c := clienttest.Start(b, r.srv.Socket())
	do := func(cmd string, args ...any) { // c.Do with room for populating many GiB
		if ans, ok := c.Try(5*time.Minute, cmd, args...); ans != "ok" {
			b.Fatalf("child: %s: %q (answered: %v)", fmt.Sprintf(cmd, args...), ans, ok)
		}
	}
	remap := func() { // a mapping of the whole volume, every page populated and writable
		do("map vol 0 %d rw", size)
		if ans, ok := c.Try(5*time.Minute, "timed 4096"); !ok || !strings.HasPrefix(ans, "ok ") {
			b.Fatalf("child: populate: %q", ans)
		}
	}
	remap()
	st := r.srv.Stats()
	var sweep, maxWait, held time.Duration
	var heldN, copied, maxCopied int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		do("loop %d", stride)
		time.Sleep(20 * time.Millisecond) // the writer is mid-pass
		s0, h0, hn0, p0 := st.SweepNanos.Load(), st.HeldNanos.Load(), st.Held.Load(), st.PreparedBytes.Load()
		snap, err := r.m.Create("snap", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot %s %s N %d\n", size/512, r.path("mem"), r.path("cow"), chunk/512)})
		if err != nil {
			b.Fatal(err)
		}
		ans, ok := c.Try(time.Minute, "halt")
		if !ok || !strings.HasPrefix(ans, "ok ") {
			b.Fatalf("writer: %q", ans)
		}
		b.StopTimer()
		var n int
		var q50, q99, mx, sum int64
		fmt.Sscan(strings.TrimPrefix(ans, "ok "), &n, &q50, &q99, &mx, &sum)
		sweep += time.Duration(st.SweepNanos.Load() - s0)
		held += time.Duration(st.HeldNanos.Load() - h0)
		heldN += st.Held.Load() - hn0
		maxWait = max(maxWait, time.Duration(mx))
		cp := st.PreparedBytes.Load() - p0
		copied += cp
		maxCopied = max(maxCopied, cp)
		// The copies must all have fitted: an overflowing transient
		// snapshot is invalidated and lets later writes through, which
		// would change what is measured.
		if status, _ := snap.Status(dm.Live); !strings.Contains(status, "/") {
			b.Fatalf("snapshot status %q after %d bytes copied into a %d-byte COW store: make it larger", status, cp, cowSize)
		}
		if err := r.m.Remove("snap", dm.RemoveOptions{}); err != nil {
			b.Fatal(err)
		}
		// Pages the writer did not store to after the cut are still
		// protected: start the next iteration from a fresh, populated,
		// writable mapping, as the first.
		if i < b.N-1 {
			do("unmap")
			remap()
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(sweep.Microseconds())/float64(b.N)/1e3, "sweep-ms")
	b.ReportMetric(float64(maxWait.Microseconds())/1e3, "max-wait-ms")
	b.ReportMetric(float64(held.Microseconds())/float64(b.N)/1e3, "held-ms")
	b.ReportMetric(float64(heldN)/float64(b.N), "held-faults")
	b.ReportMetric(float64(copied)/float64(b.N)/(1<<20), "copied-MiB")
	if maxCopied > cowSize/2 {
		b.Logf("up to %d bytes copied after the cut, more than half the %d-byte COW store", maxCopied, cowSize)
	}
	c.Do("quit")
}

// BenchmarkSuspendResume: the round trip of `suspend` then `resume` of a
// linear volume on memory (no table change) with 0 bytes mapped (the
// peer: what suspend costs without the cut) and with a client process
// mapping the whole volume (1 GiB; DAXBENCH_SUSPEND_SIZES in GiB to
// change, 0 meaning unmapped) and storing once every 64 KiB, pass after
// pass, each store timed. The suspend write-protects the mapping with
// faults held (the cut) and the resume lifts it. Reported: the round trip
// (suspend call to resume's return), of it the suspend, and the longest
// any single store of the writer took.
func BenchmarkSuspendResume(b *testing.B) {
	sizes := []int64{0, 1}
	if s := os.Getenv("DAXBENCH_SUSPEND_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			if n, err := strconv.ParseInt(f, 10, 64); err == nil && n >= 0 {
				sizes = append(sizes, n)
			}
		}
	}
	for _, g := range sizes {
		b.Run(fmt.Sprintf("mapped=%dGiB", g), func(b *testing.B) { benchSuspend(b, g<<30) })
	}
}

func benchSuspend(b *testing.B, mapped int64) {
	const stride = 64 << 10
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	size := max(mapped, 1<<30)
	r := newRigSized(b, size, "mem")
	vol, err := r.m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d linear %s 0\n", size/512, r.path("mem"))})
	if err != nil {
		b.Fatal(err)
	}
	var c *clienttest.Child
	if mapped > 0 {
		c = clienttest.Start(b, r.srv.Socket())
		if ans, ok := c.Try(5*time.Minute, "map vol 0 %d rw", mapped); ans != "ok" {
			b.Fatalf("child: map: %q (answered: %v)", ans, ok)
		}
		if ans, ok := c.Try(5*time.Minute, "timed 4096"); !ok || !strings.HasPrefix(ans, "ok ") {
			b.Fatalf("child: populate: %q", ans)
		}
	}
	var trip, susp, maxTrip, maxWait time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if c != nil {
			c.Do("loop %d", stride)
			time.Sleep(20 * time.Millisecond) // the writer is mid-pass
		}
		b.StartTimer()
		t0 := time.Now()
		if err := vol.Suspend(dm.SuspendOptions{}); err != nil {
			b.Fatal(err)
		}
		ds := time.Since(t0)
		if err := vol.Resume(); err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		b.StopTimer()
		susp += ds
		trip += d
		maxTrip = max(maxTrip, d)
		if c != nil {
			ans, ok := c.Try(time.Minute, "halt")
			if !ok || !strings.HasPrefix(ans, "ok ") {
				b.Fatalf("writer: %q", ans)
			}
			var n int
			var q50, q99, mx, sum int64
			fmt.Sscan(strings.TrimPrefix(ans, "ok "), &n, &q50, &q99, &mx, &sum)
			maxWait = max(maxWait, time.Duration(mx))
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(trip.Microseconds())/float64(b.N)/1e3, "roundtrip-ms")
	b.ReportMetric(float64(susp.Microseconds())/float64(b.N)/1e3, "suspend-ms")
	b.ReportMetric(float64(maxTrip.Microseconds())/1e3, "max-roundtrip-ms")
	if c != nil {
		b.ReportMetric(float64(maxWait.Microseconds())/1e3, "max-wait-ms")
		c.Do("quit")
	}
}
