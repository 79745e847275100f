package image_test

import (
	"os"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"golang.org/x/sys/unix"
)

// benchDir is a directory on a disk file system (not tmpfs): the
// benchmark measures the disk. DAXSNAP_BENCH_DIR overrides /var/tmp.
func benchDir(b *testing.B) string {
	dir := os.Getenv("DAXSNAP_BENCH_DIR")
	if dir == "" {
		dir = "/var/tmp"
	}
	d, err := os.MkdirTemp(dir, "daxsnap-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// directWrite writes n bytes sequentially with O_DIRECT in 1 MiB writes
// to a new file, then fdatasyncs it: the peer of a checkpoint (what
// `fio --direct=1 --rw=write --bs=1M --end_fsync=1` does).
func directWrite(b *testing.B, path string, n int64) time.Duration {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_DIRECT, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
		b.Fatal(err)
	}
	buf := alignedBuffer(1 << 20)
	for i := range buf {
		buf[i] = byte(i)
	}
	start := time.Now()
	for off := int64(0); off < n; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func alignedBuffer(n int) []byte {
	p, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return p
}

// BenchmarkCommit measures checkpoints against a sequential O_DIRECT
// write of the same bytes to the same file system, in the same run, and
// reports both bandwidths and their ratio: commit (until Commit returns:
// the checkpoint is durable) and applied (until it is in the raw image
// too). first is the first checkpoint of a new 256 MiB image, written in
// place; full writes back all 256 MiB of it each time, more than the
// apply cache holds, so the apply reads the journal back; incremental
// writes back 32 MiB of it, applied from memory.
func BenchmarkCommit(b *testing.B) {
	b.Run("first-256MiB", func(b *testing.B) { benchCommit(b, 256<<20, true) })
	b.Run("full-256MiB", func(b *testing.B) { benchCommit(b, 256<<20, false) })
	b.Run("incremental-32MiB", func(b *testing.B) { benchCommit(b, 32<<20, false) })
}

func benchCommit(b *testing.B, bytes int64, first bool) {
	const size, chunk = 256 << 20, 64 << 10
	dir := benchDir(b)
	im, err := image.Create(dir+"/vol.img", size, chunk, image.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { im.Close() }()
	if ok, why := im.Direct(); !ok {
		b.Logf("no O_DIRECT: %s", why)
	}
	data := make([]byte, chunk)
	var plain, commit, applied time.Duration
	b.SetBytes(bytes)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		plain += directWrite(b, dir+"/plain", bytes)
		os.Remove(dir + "/plain")
		if first && i > 0 {
			im.Close()
			os.Remove(dir + "/vol.img")
			os.Remove(dir + "/vol.img.journal")
			if im, err = image.Create(dir+"/vol.img", size, chunk, image.Options{}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		seq := im.Last().Seq + 1
		txn, err := im.Begin(seq)
		if err != nil {
			b.Fatal(err)
		}
		stride := size / bytes
		for c := int64(i) % stride; c < size/chunk; c += stride {
			data[0] = byte(c + int64(i))
			if err := txn.Put(c, data); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := txn.Commit(time.Now()); err != nil {
			b.Fatal(err)
		}
		commit += time.Since(start)
		if err := im.Apply(); err != nil {
			b.Fatal(err)
		}
		applied += time.Since(start)
	}
	b.StopTimer()
	n := float64(b.N) * float64(bytes) / (1 << 20)
	mbps := func(d time.Duration) float64 { return n / d.Seconds() }
	b.ReportMetric(mbps(plain), "plain-MiB/s")
	b.ReportMetric(mbps(commit), "commit-MiB/s")
	b.ReportMetric(mbps(applied), "applied-MiB/s")
	b.ReportMetric(plain.Seconds()/commit.Seconds(), "commit/plain")
	b.ReportMetric(plain.Seconds()/applied.Seconds(), "applied/plain")
}
