package checkpoint_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/checkpoint"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/linear"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// tb is what the rig needs of a test (testing.T and rapid.T).
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// rig is a real mapped device "vol" (linear over a memory file on tmpfs),
// a shared mapping of that file as a client has (mem), fake client
// mappings over it (maps: the fault path's order, without userfaultfd),
// and an image on the disk file system.
type rig struct {
	t           tb
	m           *dm.Manager
	dev         *dm.Device
	mem         []byte
	path        string // the memory file
	im          *image.Image
	maps        *fakeMaps
	size, chunk int64
}

var bg = context.Background()

// requireShm skips (fails, strict) unless /dev/shm is tmpfs.
func requireShm(t testing.TB) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		testutil.Skip(t, "/dev/shm is not tmpfs: memory volumes need it")
	}
}

// shmDir is a fresh directory on tmpfs, for memory files.
func shmDir(t tb) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-checkpoint-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newRig makes the device and an image in imgDir (a disk directory).
func newRig(t tb, size, chunk int64, imgDir string) *rig {
	t.Helper()
	path := filepath.Join(shmDir(t), "mem")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatalf("%v", err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	r := &rig{t: t, mem: mem, path: path, size: size, chunk: chunk, maps: newFakeMaps()}
	reg := dm.NewRegistry()
	reg.Register(linear.Type)
	reg.Register(snapshot.OriginType)
	reg.Register(snapshot.SnapshotType)
	r.m = dm.NewManager(reg, dm.NewDevicePool(func(name string, o backing.Options) (backing.Device, error) {
		return backing.Open(name, o)
	}))
	r.m.SetCutter(r.maps.cut)
	r.dev, err = r.m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d linear %s 0\n", size/512, path)})
	if err != nil {
		t.Fatalf("create vol: %v", err)
	}
	t.Cleanup(func() { r.m.Remove("vol", dm.RemoveOptions{}) })
	r.im, err = image.Create(filepath.Join(imgDir, "vol.img"), size, chunk, image.Options{})
	if err != nil {
		t.Fatalf("create image: %v", err)
	}
	t.Cleanup(func() { r.im.Close() })
	return r
}

// start starts checkpoints of vol into its image.
func (r *rig) start(cfg checkpoint.Config, h checkpoint.Hooks) *checkpoint.Volume {
	r.t.Helper()
	cfg.Device, cfg.Image = r.dev, r.im
	v, err := checkpoint.StartHooked(cfg, h)
	if err != nil {
		r.t.Fatalf("start: %v", err)
	}
	r.t.Cleanup(func() { v.Close() })
	return v
}

// write is a block write (NBD, FUSE).
func (r *rig) write(off int64, p []byte) {
	r.t.Helper()
	if _, err := r.dev.WriteAt(p, off); err != nil {
		r.t.Fatalf("write %d bytes at %d: %v", len(p), off, err)
	}
}

// store is a client's direct store through a mapping.
func (r *rig) store(off int64, p []byte) {
	r.t.Helper()
	if err := r.maps.store(r.dev, r.mem, off, p); err != nil {
		r.t.Fatalf("store %d bytes at %d: %v", len(p), off, err)
	}
}

// image reads the whole image (its last checkpoint).
func (r *rig) image() []byte {
	r.t.Helper()
	p := make([]byte, r.size)
	if _, err := r.im.ReadAt(p, 0); err != nil {
		r.t.Fatalf("read image: %v", err)
	}
	return p
}

// diff describes how got differs from want, "" if not.
func diff(got, want []byte, chunk int64) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := testutil.FirstDiff(got, want)
	return fmt.Sprintf("first difference at byte %d (chunk %d): got %q, want %q", i, int64(i)/chunk,
		got[i:min(i+16, len(got))], want[i:min(i+16, len(want))])
}

// fakeMaps stands for the client mappings of a device and the session's
// fault path, in the same order without userfaultfd: a store to a unit
// that no fault opened since the last cut first runs PrepareWrite for
// that unit (WriteGranularity, at least a page), as a fault does; a cut
// (the manager's Cutter) waits for the stores under way, closes every
// unit (write protection) and holds stores until it ends. Cuts nest.
type fakeMaps struct {
	mu     sync.Mutex
	cond   sync.Cond
	cuts   int            // cuts under way
	stores int            // stores under way
	open   map[int64]bool // units opened by a fault since the last cut
}

func newFakeMaps() *fakeMaps {
	f := &fakeMaps{open: map[int64]bool{}}
	f.cond.L = &f.mu
	return f
}

func (f *fakeMaps) cut(mem []dm.MemRange, why string) (end func()) {
	f.mu.Lock()
	f.cuts++
	for f.stores > 0 {
		f.cond.Wait()
	}
	clear(f.open)
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.cuts--
			f.cond.Broadcast()
			f.mu.Unlock()
		})
	}
}

func (f *fakeMaps) store(dev *dm.Device, mem []byte, off int64, p []byte) error {
	f.mu.Lock()
	for f.cuts > 0 {
		f.cond.Wait()
	}
	f.stores++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.stores--
		f.cond.Broadcast()
		f.mu.Unlock()
	}()
	unit := max(dev.WriteGranularity(off, int64(len(p))), 4096)
	for u := off / unit; u <= (off+int64(len(p))-1)/unit; u++ {
		f.mu.Lock()
		opened := f.open[u]
		f.mu.Unlock()
		if !opened {
			// A fault: the unit opens once its PrepareWrite returned.
			start := u * unit
			if err := dev.PrepareWrite(start, min(unit, dev.Size()-start)); err != nil {
				return err
			}
			f.mu.Lock()
			f.open[u] = true
			f.mu.Unlock()
		}
	}
	copy(mem[off:], p)
	return nil
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t tb, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after a minute for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// fill is n bytes of a pattern distinct for each tag.
func fill(n int, tag int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(tag*131 + i*7 + i/251)
	}
	return p
}
