package daemon_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/client"
	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// benchDir is where BenchmarkPersist puts its image and its fdatasync
// peer's file: $DAXSNAP_BENCH_DIR (a directory on the disk to measure),
// or a temporary directory.
func benchDir(b *testing.B) string {
	if d := os.Getenv("DAXSNAP_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "daxsnap-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// BenchmarkPersist measures Mapping.Persist on a checkpointed volume
// after a program stored to N bytes of it (one store per 4 KiB page, so
// N bytes of chunks are dirty), against its peer: writing the same N
// bytes to a file in the same directory and fdatasync. Both go to the
// same disk; set DAXSNAP_BENCH_DIR to choose it.
func BenchmarkPersist(b *testing.B) {
	testutil.RequireRoot(b)
	const size = 64 << 20
	for _, n := range []int{4 << 10, 1 << 20, 16 << 20} {
		b.Run("persist/"+sizeName(n), func(b *testing.B) {
			e := newEnv(b)
			e.pmemVol("vol", size)
			dir := benchDir(b)
			if _, err := e.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: filepath.Join(dir, "vol.img"), IntervalMS: 3600_000}); err != nil {
				b.Fatal(err)
			}
			c, err := client.Dial(context.Background(), e.d.SessionSocketPath())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			m, err := c.Map(context.Background(), "vol", client.MapOptions{Length: size, Write: true})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			if err := m.Persist(0, size); err != nil { // the first checkpoint writes everything
				b.Fatal(err)
			}
			b.SetBytes(int64(n))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				off := (i * n) % size
				m.Access(context.Background(), func(mem []byte) error {
					for p := off; p < off+n; p += 4096 {
						mem[p]++
					}
					return nil
				})
				if err := m.Persist(off, n); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("fdatasync/"+sizeName(n), func(b *testing.B) {
			f, err := os.OpenFile(filepath.Join(benchDir(b), "peer"), os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
				b.Fatal(err)
			}
			f.Sync()
			buf := make([]byte, n)
			b.SetBytes(int64(n))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				off := (i * n) % size
				buf[0]++
				if _, err := f.WriteAt(buf, int64(off)); err != nil {
					b.Fatal(err)
				}
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return strconv.Itoa(n>>20) + "MiB"
	}
	return strconv.Itoa(n>>10) + "KiB"
}

// BenchmarkRestore measures the restore at start of a checkpointed volume
// whose memory is gone (size bytes, every page written), against its
// peers reading the same image with O_DIRECT at the restore's block size
// (8 MiB): fio with as many reads in flight as the restore has
// (daemon.RestoreStreams), and dd with one. Set DAXSNAP_BENCH_DIR to choose the
// disk.
func BenchmarkRestore(b *testing.B) {
	testutil.RequireRoot(b)
	const size = 1 << 30
	dir := benchDir(b)
	img := filepath.Join(dir, "vol.img")
	// setup makes a checkpointed 1 GiB volume, every page written.
	setup := func(b *testing.B, lazy bool) (*env, string) {
		e := newEnvWith(b, func(cfg *daemon.Config) { cfg.LazyRestore = lazy })
		region := e.pmemVol("vol", size)
		for off := int64(0); off < size; off += 32 << 20 {
			e.must("write", e.c.WriteData(bg, "vol", off, fillImage(32<<20, uint64(off>>20))))
		}
		if _, err := e.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: img, IntervalMS: 3600_000}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.c.CheckpointNow(bg, "vol"); err != nil {
			b.Fatal(err)
		}
		return e, region
	}
	// reboot stops the daemon, deletes the region and starts it again,
	// timing only the start; it returns when the start began.
	reboot := func(b *testing.B, e *env, region string) time.Time {
		b.StopTimer()
		e.stop()
		if err := os.Remove(region); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		began := time.Now()
		e.start()
		return began
	}
	b.Run("restore", func(b *testing.B) {
		e, region := setup(b, false)
		b.SetBytes(size)
		b.ResetTimer()
		for b.Loop() {
			reboot(b, e, region)
		}
		b.StopTimer()
		if in := e.info("vol"); in.Durability == nil || in.Durability.Restored == nil {
			b.Fatalf("not restored: %+v", in)
		}
	})
	// lazy: serve --restore=lazy. An op is the restore until complete,
	// the daemon's start included. Time to first access, by either door:
	// read-ms from the start until a block read of 4 KiB at a random
	// place returns; map-ms the start plus a program's map of the whole
	// volume and a load from a random page (the program's own start
	// left out; the restore has gone on meanwhile).
	b.Run("lazy", func(b *testing.B) {
		e, region := setup(b, true)
		b.SetBytes(size)
		var readMS, mapMS float64
		rounds := 0
		b.ResetTimer()
		for b.Loop() {
			began := reboot(b, e, region)
			started := time.Since(began)
			off := rand.Int64N(size/4096) * 4096
			p, err := e.c.ReadData(bg, "vol", off, 4096)
			if err != nil || !bytes.Equal(p, fillImage(32<<20, uint64(off>>20>>5<<5))[off%(32<<20):off%(32<<20)+4096]) {
				b.Fatalf("first read at %d: %v, or not the checkpoint's bytes", off, err)
			}
			readMS += float64(time.Since(began).Microseconds()) / 1000
			// The program is as if it had been running: its start is
			// not counted, the daemon's is.
			c := clienttest.Start(b, e.d.SessionSocketPath())
			t := time.Now()
			c.Do("map vol 0 %d rw", size)
			c.Do("peek %d", rand.Int64N(size))
			mapMS += float64((started + time.Since(t)).Microseconds()) / 1000
			for {
				in := e.info("vol")
				if in.Durability != nil && in.Durability.Restoring == nil && in.Durability.Restored != nil {
					break
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			c.Do("unmap")
			c.Do("quit")
			b.StartTimer()
			rounds++
		}
		b.ReportMetric(readMS/float64(rounds), "read-ms")
		b.ReportMetric(mapMS/float64(rounds), "map-ms")
	})
	b.Run("fio", func(b *testing.B) {
		testutil.RequireTool(b, "fio")
		b.SetBytes(size)
		for b.Loop() {
			cmd := exec.Command("fio", "--name=restore-peer", "--filename="+img, "--rw=read", "--direct=1",
				"--bs="+strconv.Itoa(daemon.RestoreBlock), "--ioengine=libaio", "--iodepth="+strconv.Itoa(daemon.RestoreStreams),
				"--size="+strconv.Itoa(size), "--output-format=json")
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("fio: %v: %s", err, out)
			}
			if job := testutil.FIOResult(b, string(out)); job.Error != 0 || job.Read.Bytes != size {
				b.Fatalf("fio: error %d, read %d of %d bytes", job.Error, job.Read.Bytes, size)
			}
		}
	})
	b.Run("dd", func(b *testing.B) {
		testutil.RequireTool(b, "dd")
		b.SetBytes(size)
		for b.Loop() {
			if out, err := exec.Command("dd", "if="+img, "of=/dev/null", "bs=8M", "iflag=direct").CombinedOutput(); err != nil {
				b.Fatalf("dd: %v: %s", err, out)
			}
		}
	})
}
