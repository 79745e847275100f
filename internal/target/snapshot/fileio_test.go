package snapshot_test

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
)

// fileMem is memory whose file can be read and written without its
// mapping (backing.FileReader, FileWriter: a tmpfs file), counting
// those reads and writes.
type fileMem struct {
	*backingtest.Mem
	fileReads, fileWrites atomic.Int64
}

func (f *fileMem) ReadFileAt(p []byte, off int64) (int, error) {
	f.fileReads.Add(1)
	return f.Mem.ReadAt(p, off)
}

func (f *fileMem) WriteFileAt(p []byte, off int64) (int, error) {
	f.fileWrites.Add(1)
	return f.Mem.WriteAt(p, off)
}

// FileWrites: a tmpfs file in small pages (backing.FileWrites).
func (f *fileMem) FileWrites() bool { return true }

// fileWorld is `vol`, a snapshot-origin over the mapped device `real`
// (one linear line on the memory "orig"), and its snapshot s0 with COW
// "cow0"; both memories can be read and written through their files.
type fileWorld struct {
	orig, cow *fileMem
	vol, s0   *dm.Device
	old       []byte // the origin's bytes when s0 was taken
}

func newFileWorld(t *testing.T) *fileWorld {
	w := &fileWorld{
		orig: &fileMem{Mem: backingtest.NewMem("orig", originBytes, backing.DAX)},
		cow:  &fileMem{Mem: backingtest.NewMem("cow0", cowBytes, backing.DAX)},
	}
	for i := range w.orig.Bytes() {
		w.orig.Bytes()[i] = byte(i/4096 + 1)
	}
	w.old = bytes.Clone(w.orig.Bytes())
	reg := dm.NewRegistry()
	all.Register(reg)
	m := dm.NewManager(reg, dm.NewDevicePool(func(name string, _ backing.Options) (backing.Device, error) {
		switch name {
		case "orig":
			return w.orig, nil
		case "cow0":
			return w.cow, nil
		}
		return nil, fmt.Errorf("open %s: no such file or directory", name)
	}))
	_, err := m.Create("real", dm.CreateOptions{Table: fmt.Sprintf("0 %d linear orig 0", sectors)})
	must(t, err)
	w.vol, err = m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot-origin %sreal", sectors, dm.MapperPrefix)})
	must(t, err)
	must(t, w.vol.Suspend(dm.SuspendOptions{}))
	w.s0, err = m.Create("s0", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot %sreal cow0 P 8", sectors, dm.MapperPrefix)})
	must(t, err)
	must(t, w.vol.Resume())
	return w
}

// counts checks how many reads and writes went through f's file since
// the last check.
func (f *fileMem) counts(t *testing.T, what string, reads, writes int64) {
	t.Helper()
	if r, w := f.fileReads.Swap(0), f.fileWrites.Swap(0); r != reads || w != writes {
		t.Errorf("%s: %d reads and %d writes through the file of %s, want %d and %d", what, r, w, f.Path(), reads, writes)
	}
}

// TestOrigin_firstWritesThroughFile: the copy-out of a first write reads
// the origin chunk through the file of the memory under the origin
// (through the stack: snapshot-origin over a mapped device whose linear
// line is on the memory), and the write that needed it goes through the
// file too, one by one or in a burst that PrepareWrites copied out first:
// the daemon's mapping of a chunk read with pread is likely untouched,
// and a first store into it costs a page fault and, on a VM with shadow
// page tables, a trap (8-16 µs a page) where pwrite costs 2. A write to
// a chunk already copied out stores through the mapping as before. The
// snapshot keeps the old bytes and the origin gets the new ones.
func TestOrigin_firstWritesThroughFile(t *testing.T) {
	w := newFileWorld(t)
	orig, vol, s0, old := w.orig, w.vol, w.s0, w.old
	w.cow.fileWrites.Store(0)
	want := bytes.Clone(old)
	write := func(off int64, n int, b byte) {
		t.Helper()
		p := bytes.Repeat([]byte{b}, n)
		_, err := vol.WriteAt(p, off)
		must(t, err)
		copy(want[off:], p)
	}
	counts := func(what string, reads, writes int64) {
		t.Helper()
		orig.counts(t, what, reads, writes)
	}

	write(3*4096+100, 200, 0xa1)
	counts("a first write", 1, 1)
	write(3*4096+1000, 200, 0xa2)
	counts("a second write to the chunk", 0, 0)

	burst := []dm.Range{{Off: 7 * 4096, Len: 4096}, {Off: 9*4096 + 10, Len: 100}}
	must(t, vol.PrepareWrites(burst))
	counts("PrepareWrites of two first writes", 2, 0)
	write(7*4096, 4096, 0xb1)
	write(9*4096+10, 100, 0xb2)
	counts("the burst's writes", 0, 2)
	write(9*4096+500, 10, 0xb3)
	counts("a later write to a chunk of the burst", 0, 0)

	if !bytes.Equal(orig.Bytes(), want) {
		t.Error("the origin does not hold what was written")
	}
	if got := read(t, s0, 0, originBytes); !bytes.Equal(got, old) {
		t.Error("the snapshot lost the origin's old data")
	}
}

// TestSnapshot_firstWritesThroughFile: a write to the snapshot device
// that gives its chunk an exception fills the fresh COW chunk through
// the COW's file, whole (a full chunk) or copied from the origin and
// then written (a partial one); a later write to the chunk stores
// through the mapping, and the origin is only read, through its file.
func TestSnapshot_firstWritesThroughFile(t *testing.T) {
	w := newFileWorld(t)
	w.cow.fileWrites.Store(0)
	want := bytes.Clone(w.old)
	write := func(off int64, n int, b byte) {
		t.Helper()
		p := bytes.Repeat([]byte{b}, n)
		_, err := w.s0.WriteAt(p, off)
		must(t, err)
		copy(want[off:], p)
	}
	write(2*4096, 4096, 0xc1)
	w.cow.counts(t, "a whole-chunk first write", 0, 1)
	write(6*4096+300, 100, 0xc2)
	w.cow.counts(t, "a partial first write", 0, 2)
	w.orig.counts(t, "the partial first write's copy", 1, 0)
	write(6*4096+900, 100, 0xc3)
	write(2*4096+5, 10, 0xc4)
	w.cow.counts(t, "writes to chunks with exceptions", 0, 0)
	if got := read(t, w.s0, 0, originBytes); !bytes.Equal(got, want) {
		t.Error("the snapshot does not read what was written to it")
	}
	if !bytes.Equal(w.orig.Bytes(), w.old) {
		t.Error("writes to the snapshot changed the origin")
	}
}
