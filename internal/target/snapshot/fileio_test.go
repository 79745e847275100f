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
	orig := &fileMem{Mem: backingtest.NewMem("orig", originBytes, backing.DAX)}
	for i := range orig.Bytes() {
		orig.Bytes()[i] = byte(i/4096 + 1)
	}
	old := bytes.Clone(orig.Bytes())
	cow := backingtest.NewMem("cow0", cowBytes, 0)
	reg := dm.NewRegistry()
	all.Register(reg)
	m := dm.NewManager(reg, dm.NewDevicePool(func(name string, _ backing.Options) (backing.Device, error) {
		switch name {
		case "orig":
			return orig, nil
		case "cow0":
			return cow, nil
		}
		return nil, fmt.Errorf("open %s: no such file or directory", name)
	}))
	_, err := m.Create("real", dm.CreateOptions{Table: fmt.Sprintf("0 %d linear orig 0", sectors)})
	must(t, err)
	vol, err := m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot-origin %sreal", sectors, dm.MapperPrefix)})
	must(t, err)
	must(t, vol.Suspend(dm.SuspendOptions{}))
	s0, err := m.Create("s0", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot %sreal cow0 P 8", sectors, dm.MapperPrefix)})
	must(t, err)
	must(t, vol.Resume())

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
		if r, w := orig.fileReads.Swap(0), orig.fileWrites.Swap(0); r != reads || w != writes {
			t.Errorf("%s: %d reads and %d writes through the origin's file, want %d and %d", what, r, w, reads, writes)
		}
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
