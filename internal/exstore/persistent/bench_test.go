package persistent

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// fileDev is a minimal backing.Device over an *os.File, enough for the
// benchmark (backing.Open is being written elsewhere): Flush is fsync.
type fileDev struct {
	f       *os.File
	size    int64
	delay   time.Duration // added to every flush, to model a disk's latency
	flushes atomic.Int64
}

func (d *fileDev) Path() string                     { return d.f.Name() }
func (d *fileDev) ID() backing.ID                   { return backing.ID{} }
func (d *fileDev) Kind() backing.Kind               { return backing.KindTmpfs }
func (d *fileDev) Size() int64                      { return d.size }
func (d *fileDev) LogicalBlockSize() int            { return 512 }
func (d *fileDev) Capabilities() backing.Capability { return 0 }
func (d *fileDev) ReadOnly() bool                   { return false }
func (d *fileDev) Close() error                     { return d.f.Close() }

func (d *fileDev) ReadAt(p []byte, off int64) (int, error)  { return d.f.ReadAt(p, off) }
func (d *fileDev) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }
func (d *fileDev) Discard(off, n int64) error               { return d.WriteZeroes(off, n) }

func (d *fileDev) Flush() error {
	d.flushes.Add(1)
	if d.delay > 0 {
		time.Sleep(d.delay)
	}
	return d.f.Sync()
}
func (d *fileDev) WriteZeroes(off, n int64) error {
	_, err := d.f.WriteAt(make([]byte, n), off)
	return err
}

// newShmDev makes a sparse file of size bytes on tmpfs, removed at the end.
func newShmDev(b testing.TB, size int64) *fileDev {
	f, err := os.CreateTemp("/dev/shm", "daxsnap-bench-*.cow")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { f.Close(); os.Remove(f.Name()) })
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	return &fileDev{f: f, size: size}
}

// BenchmarkCommit measures Prepare + 4 KiB data write + Commit on a tmpfs
// file, with 1 and 16 goroutines committing at once; flushes/commit shows
// how well group commit batches (a lone commit costs 2 flushes). tmpfs
// flushes cost nothing, so the flush=1ms runs add a disk-like flush
// latency, where batching matters: compare committers=16 with its
// committers=1 peer.
func BenchmarkCommit(b *testing.B) {
	for _, delay := range []time.Duration{0, time.Millisecond} {
		for _, n := range []int{1, 16} {
			b.Run(fmt.Sprintf("flush=%v/committers=%d", delay, n), func(b *testing.B) { benchCommit(b, n, delay) })
		}
	}
}

func benchCommit(b *testing.B, committers int, delay time.Duration) {
	const chunk, size = 8, 64 << 20
	dev := newShmDev(b, size)
	dev.delay = delay
	data := make([]byte, exstore.Sector(chunk).Bytes())
	for i := range data {
		data[i] = byte(i)
	}
	b.SetBytes(int64(len(data)))
	var elapsed time.Duration
	var flushes int64
	for done := 0; done < b.N; {
		// A fresh store on a wiped file for each round the device can hold.
		if err := dev.f.Truncate(0); err != nil {
			b.Fatal(err)
		}
		if err := dev.f.Truncate(size); err != nil {
			b.Fatal(err)
		}
		s, err := Open(dev, Options{ChunkSize: chunk})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Load(func(exstore.Exception) error { return nil }); err != nil {
			b.Fatal(err)
		}
		f0, t0 := dev.flushes.Load(), time.Now()
		n := benchRound(b, s, dev, data, committers, b.N-done)
		elapsed += time.Since(t0)
		flushes += dev.flushes.Load() - f0
		done += n
		s.Close()
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(flushes)/float64(b.N), "flushes/commit")
}

// benchRound commits up to want exceptions from committers goroutines and
// returns how many it did before the store filled up.
func benchRound(b *testing.B, s *Store, dev *fileDev, data []byte, committers, want int) int {
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range committers {
		wg.Go(func() {
			for next.Add(1) <= int64(want) {
				c, err := s.Prepare()
				if errors.Is(err, exstore.ErrNoSpace) {
					return
				}
				if err != nil {
					b.Error(err)
					return
				}
				if _, err := dev.WriteAt(data, int64(c)*int64(len(data))); err != nil {
					b.Error(err)
					return
				}
				if err := s.Commit(exstore.Exception{Old: c, New: c}); err != nil {
					b.Error(err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return int(done.Load())
}
