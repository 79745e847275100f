// Package bench holds benchmarks that compare daxsnap with a peer measured
// in the same run. Run them with bench/*.sh, which prints the ratios.
package bench

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

const benchSize = 256 << 20

type blockIO interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
}

// tmpfsFile makes a fully allocated file on tmpfs, so neither side pays
// first-touch page allocation during the timed loop.
func tmpfsFile(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-bench-")
	if err != nil {
		testutil.Skip(b, "no /dev/shm tmpfs: "+err.Error())
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "region")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for off := int64(0); off < benchSize; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	return path
}

// BenchmarkLinear runs the same I/O on a linear device over a tmpfs file
// ("linear"), with pread/pwrite on that file ("file") and with memmove on
// a shared mapping of it ("memmove"); bench/linear.sh prints the ratios.
func BenchmarkLinear(b *testing.B) {
	path := tmpfsFile(b)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, benchSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(mem)
	reg := dm.NewRegistry()
	all.Register(reg)
	m := dm.NewManager(reg, dm.NewDevicePool(nil))
	d, err := m.Create("bench", dm.CreateOptions{Table: "0 " + strconv.Itoa(benchSize/512) + " linear " + path + " 0"})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Remove("bench", dm.RemoveOptions{})
	for _, peer := range []struct {
		name string
		io   blockIO
	}{{"file", f}, {"memmove", memIO(mem)}, {"linear", d}} {
		for _, w := range workloads {
			b.Run(w.name+"/"+peer.name, func(b *testing.B) { w.run(b, peer.io) })
		}
	}
}

// memIO is the floor: memmove to and from a shared mapping of the file.
type memIO []byte

func (m memIO) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m memIO) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

type workload struct {
	name  string
	size  int
	rand  bool
	write bool
}

var workloads = []workload{
	{"4k-randread", 4096, true, false},
	{"4k-randwrite", 4096, true, true},
	{"1m-seqread", 1 << 20, false, false},
	{"1m-seqwrite", 1 << 20, false, true},
}

func (w workload) run(b *testing.B, io blockIO) {
	buf := make([]byte, w.size)
	blocks := int64(benchSize / w.size)
	rng := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(int64(w.size))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		blk := int64(i) % blocks
		if w.rand {
			blk = rng.Int64N(blocks)
		}
		var err error
		if w.write {
			_, err = io.WriteAt(buf, blk*int64(w.size))
		} else {
			_, err = io.ReadAt(buf, blk*int64(w.size))
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
