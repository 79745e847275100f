package checkpoint_test

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/checkpoint"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
)

// BenchmarkWriteBack measures write-back bandwidth: bytes of volume data
// made durable per second of checkpoint time (cut to Commit: the
// checkpoint is durable and reported complete), in three cases, each
// iteration one checkpoint of a volume of random data (64 KiB chunks):
//
//   - first: the first checkpoint of a new image, every chunk (written
//     in place, no journal);
//   - full: a later checkpoint with every chunk dirty (journal, then the
//     apply into the image in the background, outside the timing), the
//     journal already grown by an untimed one (steady state);
//   - dirty=25%: a later checkpoint of a random quarter of the chunks.
//
// The volume is DAXSNAP_BENCH_SIZE bytes (default 256 MiB), the image in
// DAXSNAP_BENCH_DIR, else the test's temporary directory (a disk file
// system, not tmpfs). Before each checkpoint (untimed) the peer writes as
// many bytes to a new file in the same directory: sequential O_DIRECT
// writes of 1 MiB, then fdatasync (what `fio --direct=1 --rw=write
// --bs=1M --end_fsync=1` does), so both see the same disk at the same
// time. MB/s is the checkpoints', odirect-MB/s the peer's, x-odirect
// their ratio, applied-MB/s until the image file holds the checkpoint
// (apply included; later checkpoints only). bench/checkpoint.sh runs it
// against fio itself.
func BenchmarkWriteBack(b *testing.B) {
	requireShm(b)
	size := int64(256 << 20)
	if s := os.Getenv("DAXSNAP_BENCH_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n%(1<<20) != 0 {
			b.Fatalf("DAXSNAP_BENCH_SIZE=%q: want a positive number of bytes, a multiple of 1 MiB", s)
		}
		size = n
	}
	const chunk = 64 << 10
	b.Run("first", func(b *testing.B) { benchWriteBack(b, size, chunk, 0) })
	b.Run("full", func(b *testing.B) { benchWriteBack(b, size, chunk, 100) })
	b.Run("dirty=25%", func(b *testing.B) { benchWriteBack(b, size, chunk, 25) })
}

// benchWriteBack times checkpoints of pct percent of the chunks (0: the
// first checkpoint of a new image, all of them).
func benchWriteBack(b *testing.B, size, chunk int64, pct int) {
	dir := b.TempDir()
	if d := os.Getenv("DAXSNAP_BENCH_DIR"); d != "" {
		var err error
		if dir, err = os.MkdirTemp(d, "checkpoint-bench-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	r := newRig(b, size, chunk, dir)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(r.mem); i += 8 {
		binary.LittleEndian.PutUint64(r.mem[i:], rng.Uint64())
	}
	n := size / chunk
	var v *checkpoint.Volume
	if pct > 0 {
		// The first writes every chunk in place; a second, of every chunk
		// too, grows the journal to the volume's size, as the first full
		// checkpoint after enabling does once: the timed ones find it
		// grown, as every later checkpoint does.
		v = r.start(checkpoint.Config{}, checkpoint.Hooks{})
		for i := range 2 {
			if i > 0 {
				for c := range n {
					r.write(c*chunk, []byte{0xff})
				}
			}
			if _, err := v.Checkpoint(bg); err != nil {
				b.Fatal(err)
			}
		}
		if err := r.im.Apply(); err != nil {
			b.Fatal(err)
		}
	}
	var bytes int64
	var timed, applied, peer time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		want := n
		switch {
		case pct == 0 && i > 0:
			// A new image each time: close the last one's engine and image.
			v.Close()
			r.im.Close()
			os.Remove(filepath.Join(dir, "vol.img"))
			os.Remove(filepath.Join(dir, "vol.img.journal"))
			var err error
			if r.im, err = image.Create(filepath.Join(dir, "vol.img"), size, chunk, image.Options{}); err != nil {
				b.Fatal(err)
			}
		case pct > 0:
			want = 0
			for c := range n {
				if pct == 100 || rng.IntN(100) < pct {
					r.write(c*chunk, []byte{byte(i + 1)})
					want++
				}
			}
		}
		peer += odirectWrite(b, filepath.Join(dir, "peer"), want*chunk)
		if pct == 0 {
			v = r.start(checkpoint.Config{}, checkpoint.Hooks{})
		}
		began := time.Now()
		b.StartTimer()
		cp, err := v.Checkpoint(bg)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		timed += time.Since(began)
		if cp.Chunks != want {
			b.Fatalf("checkpoint wrote %d chunks, want %d", cp.Chunks, want)
		}
		if err := r.im.Apply(); err != nil {
			b.Fatal(err)
		}
		applied += time.Since(began)
		bytes += cp.Bytes
	}
	mbps := func(d time.Duration) float64 { return float64(bytes) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(timed), "MB/s")
	b.ReportMetric(mbps(peer), "odirect-MB/s")
	b.ReportMetric(peer.Seconds()/timed.Seconds(), "x-odirect")
	if pct > 0 {
		b.ReportMetric(mbps(applied), "applied-MB/s")
	}
}

// odirectWrite writes n bytes sequentially to a new file at path with
// O_DIRECT in 1 MiB blocks (the last maybe shorter), then fdatasync, and
// returns how long that took.
func odirectWrite(b *testing.B, path string, n int64) time.Duration {
	b.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|unix.O_DIRECT, 0o600)
	if err != nil {
		b.Fatalf("O_DIRECT: %v", err)
	}
	defer os.Remove(path)
	defer f.Close()
	const bs = 1 << 20
	buf, err := unix.Mmap(-1, 0, bs, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	for off := int64(0); off < n; off += bs {
		if _, err := f.WriteAt(buf[:min(bs, n-off)], off); err != nil {
			b.Fatal(err)
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}
