package backing_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// growFile grows path to size bytes as snapshot extend does: fallocate,
// which on tmpfs and hugetlbfs allocates the new pages too.
func growFile(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, fi.Size(), size-fi.Size()); err != nil {
		t.Fatalf("fallocate %s from %d to %d bytes: %v", path, fi.Size(), size, err)
	}
}

func reprobe(t testing.TB, dev backing.Device) {
	t.Helper()
	r, ok := dev.(backing.Reprober)
	if !ok {
		t.Fatalf("%T is not a Reprober", dev)
	}
	if err := r.Reprobe(); err != nil {
		t.Fatal(err)
	}
}

// Ensure that a memory file opened with room to grow (a COW on tmpfs or
// hugetlbfs being extended) takes its growth in on Reprobe, in place: a
// slice DirectAccess returned before stays the device's memory, the new
// part reads zeroes and holds writes, and growth past the limit is taken
// in only up to it. Before, a memory device was mapped at its size and
// had no Reprobe, so the snapshot never saw its COW grow.
func TestMemory_growInPlace(t *testing.T) {
	for _, c := range []struct {
		name string
		file func(t *testing.T) (path string, page int64)
	}{
		{"tmpfs", func(t *testing.T) (string, int64) { return tmpfsFile(t, 3*4096+512), 4096 }},
		{"hugetlbfs", func(t *testing.T) (string, int64) { return filledHugetlbfsFile(t, 1) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			path, page := c.file(t)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			size := fi.Size()
			limit := size + 3*page
			dev, err := backing.Open(path, backing.Options{GrowLimit: limit})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			if got := dev.Capabilities(); !got.Has(backing.DAX | backing.WPFault) {
				t.Errorf("capabilities %s, want dax,wpfault as without room to grow", got)
			}
			old, err := dev.(backing.DirectAccesser).DirectAccess(0, size)
			if err != nil {
				t.Fatal(err)
			}
			want := bytes.Clone(old)

			growFile(t, path, size+2*page)
			reprobe(t, dev)
			if got := dev.Size(); got != size+2*page {
				t.Fatalf("size after growing the file by 2 pages = %d, want %d", got, size+2*page)
			}
			want = append(want, make([]byte, 2*page)...)
			tail := bytes.Repeat([]byte{0xa5}, int(page))
			if _, err := dev.WriteAt(tail, size+page); err != nil {
				t.Fatalf("write to the grown part: %v", err)
			}
			copy(want[size+page:], tail)
			old[0] ^= 0xff // the old slice is still the device's memory
			want[0] ^= 0xff
			got := make([]byte, dev.Size())
			if _, err := dev.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("contents after growth differ from the file grown with zeroes and the writes made")
			}
			if err := dev.Flush(); err != nil {
				t.Fatalf("flush across the grown mapping: %v", err)
			}

			growFile(t, path, limit+page) // past the limit
			reprobe(t, dev)
			if got := dev.Size(); got != limit {
				t.Fatalf("size after growing the file past the limit = %d, want the limit %d", got, limit)
			}
			if _, err := dev.WriteAt(tail, limit-page); err != nil {
				t.Fatalf("write to the last page of the limit: %v", err)
			}
			if _, err := dev.WriteAt(tail[:1], limit); err == nil {
				t.Fatal("a write past the limit succeeded")
			}
		})
	}
}

// Ensure that a memory file opened without room to grow keeps its size
// when the file grows: its mapping cannot follow.
func TestMemory_noGrowWithoutLimit(t *testing.T) {
	path := tmpfsFile(t, 8192)
	dev, err := backing.Open(path, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	growFile(t, path, 3*8192)
	reprobe(t, dev)
	if got := dev.Size(); got != 8192 {
		t.Fatalf("size = %d, want 8192 (no room to grow was asked for)", got)
	}
}

// Every growable memory device still keeps the device contract.
func TestConformance_TmpfsGrowable(t *testing.T) {
	path := tmpfsFile(t, testSize)
	backingtest.Run(t, func(t *testing.T) backing.Device {
		dev, err := backing.Open(path, backing.Options{GrowLimit: 4 * testSize})
		if err != nil {
			t.Fatal(err)
		}
		return dev
	})
}

// growOp is one step of TestMemory_growModel.
type growOp int

const (
	growWrite       growOp = iota // WriteAt
	growDirectWrite               // a store through a slice taken at open
	growFileGrows                 // the file grows (fallocate or ftruncate)
	growReprobe                   // Reprobe
)

// TestMemory_growModel checks a growable tmpfs device against a reference
// model, a byte slice for the file and the size the device has taken in:
// random writes through I/O and through a slice DirectAccess gave before
// any growth, growths of the file by fallocate and ftruncate (past the
// limit too) and Reprobes. After each step the device reads back the
// model up to its size, the file holds the same bytes (the mapping is the
// file's), and DirectAccess of the whole device sees them too.
func TestMemory_growModel(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-grow-")
	if err != nil {
		testutil.Skip(t, "no /dev/shm: "+err.Error())
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		n++
		path := filepath.Join(dir, "mem"+strconv.Itoa(n))
		defer os.Remove(path)
		start := rapid.Int64Range(1, 5*4096).Draw(rt, "size")
		limit := rapid.Int64Range(0, 12*4096).Draw(rt, "limit")
		file := make([]byte, start)
		if err := os.WriteFile(path, file, 0o600); err != nil {
			rt.Fatal(err)
		}
		dev, err := backing.Open(path, backing.Options{GrowLimit: limit})
		if err != nil {
			rt.Fatal(err)
		}
		defer dev.Close()
		held, err := dev.(backing.DirectAccesser).DirectAccess(0, start)
		if err != nil {
			rt.Fatal(err)
		}
		size := start // what the device has taken in
		for range rapid.IntRange(1, 12).Draw(rt, "steps") {
			switch rapid.SampledFrom([]growOp{growWrite, growDirectWrite, growFileGrows, growReprobe}).Draw(rt, "op") {
			case growWrite:
				off := rapid.Int64Range(0, size-1).Draw(rt, "off")
				n := rapid.Int64Range(1, size-off).Draw(rt, "n")
				b := bytes.Repeat([]byte{byte(rapid.IntRange(1, 255).Draw(rt, "byte"))}, int(n))
				if _, err := dev.WriteAt(b, off); err != nil {
					rt.Fatalf("WriteAt(%d, %d) of a %d-byte device: %v", off, n, size, err)
				}
				copy(file[off:], b)
			case growDirectWrite:
				off := rapid.Int64Range(0, start-1).Draw(rt, "off")
				v := byte(rapid.IntRange(1, 255).Draw(rt, "byte"))
				held[off], file[off] = v, v
			case growFileGrows:
				to := int64(len(file)) + rapid.Int64Range(1, 4*4096).Draw(rt, "grow")
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					rt.Fatal(err)
				}
				if rapid.Bool().Draw(rt, "truncate") {
					err = f.Truncate(to)
				} else {
					err = unix.Fallocate(int(f.Fd()), 0, int64(len(file)), to-int64(len(file)))
				}
				f.Close()
				if err != nil {
					rt.Fatal(err)
				}
				file = append(file, make([]byte, to-int64(len(file)))...)
			case growReprobe:
				if err := dev.(backing.Reprober).Reprobe(); err != nil {
					rt.Fatal(err)
				}
				if limit > start {
					size = max(size, min(int64(len(file)), limit))
				}
			}
			if got := dev.Size(); got != size {
				rt.Fatalf("Size = %d, model %d (file %d bytes, limit %d)", got, size, len(file), limit)
			}
			got := make([]byte, size)
			if _, err := dev.ReadAt(got, 0); err != nil {
				rt.Fatal(err)
			}
			if !bytes.Equal(got, file[:size]) {
				rt.Fatalf("ReadAt of the whole device differs from the model")
			}
			da, err := dev.(backing.DirectAccesser).DirectAccess(0, size)
			if err != nil || !bytes.Equal(da, file[:size]) {
				rt.Fatalf("DirectAccess of the whole device differs from the model (err %v)", err)
			}
			onDisk, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(onDisk, file) {
				rt.Fatalf("the file differs from the model (err %v)", err)
			}
		}
	})
}

// Ensure that on hugetlbfs a limit within a huge page (a COW's full size
// rarely is a multiple of one) takes in the whole page the file grows by
// to cover it: the file can only grow in whole pages, and dropping the
// last one would leave the bytes below the limit in it out.
func TestMemory_growHugetlbfsUnalignedLimit(t *testing.T) {
	path, page := filledHugetlbfsFile(t, 1)
	dev, err := backing.Open(path, backing.Options{GrowLimit: page + 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	growFile(t, path, 2*page)
	reprobe(t, dev)
	if got := dev.Size(); got != 2*page {
		t.Fatalf("size after growing the file by a huge page for a limit of page+4096 = %d, want %d", got, 2*page)
	}
}
