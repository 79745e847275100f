package persistent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

func mustLoad(t *testing.T, s *Store) []exstore.Exception {
	t.Helper()
	var got []exstore.Exception
	if err := s.Load(func(e exstore.Exception) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestOpen_ChunkSizeOverrideWarns(t *testing.T) {
	dev := memImage("p.cow", validImage(8, 8, run(1, 2, 3)).bytes())
	var logs bytes.Buffer
	s, err := Open(dev, Options{ChunkSize: 16, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if s.ChunkSize() != 8 {
		t.Errorf("ChunkSize = %d, want the on-disk 8", s.ChunkSize())
	}
	if got := s.Status(exstore.StatusTable); got != "P 8" {
		t.Errorf("Status(table) = %q, want \"P 8\"", got)
	}
	if !strings.Contains(logs.String(), "metadata_chunk_size=8 table_chunk_size=16") {
		t.Errorf("no override warning; log: %q", logs.String())
	}
	if got := mustLoad(t, s); len(got) != 3 {
		t.Errorf("loaded %v, want 3 exceptions", got)
	}

	logs.Reset()
	if _, err := Open(dev, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil || logs.Len() != 0 {
		t.Errorf("table chunk size 0 (default): err %v, log %q; want the disk's size silently", err, logs.String())
	}
}

func TestOpen_ChunkSize(t *testing.T) {
	tests := []struct {
		name      string
		lbs       int // COW logical block size
		originLBS int
		table     exstore.Sector
		want      exstore.Sector
		err       string
	}{
		{name: "default", lbs: 512, want: 32},
		{name: "default follows a large block size", lbs: 32 << 10, want: 64},
		{name: "explicit", lbs: 512, table: 8, want: 8},
		{name: "one sector", lbs: 512, table: 1, want: 1},
		{name: "not a power of two", lbs: 512, table: 24, err: "24 sectors is not a power of two"},
		{name: "below the COW block size", lbs: 4096, table: 4, err: "not a multiple of the device's logical block size of 4096 bytes; use a chunk size of at least 8 sectors"},
		{name: "below the origin block size", lbs: 512, originLBS: 4096, table: 4, err: "logical block size of 4096 bytes"},
		{name: "too large", lbs: 512, table: 1 << 22, err: "larger than the maximum 2097152 sectors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := &blockDev{Mem: backingtest.NewMem("c.cow", 1<<20, 0), lbs: tt.lbs}
			s, err := Open(dev, Options{ChunkSize: tt.table, OriginLogicalBlockSize: tt.originLBS})
			if tt.err != "" {
				if !errors.Is(err, exstore.ErrInvalidChunkSize) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, want ErrInvalidChunkSize saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.ChunkSize() != tt.want {
				t.Errorf("ChunkSize = %d, want %d", s.ChunkSize(), tt.want)
			}
		})
	}
}

// blockDev is a Mem with another logical block size.
type blockDev struct {
	*backingtest.Mem
	lbs int
}

func (d *blockDev) LogicalBlockSize() int { return d.lbs }

func TestOpen_SmallDevices(t *testing.T) {
	if _, err := Open(backingtest.NewMem("tiny.cow", 100, 0), Options{}); err == nil || !strings.Contains(err.Error(), "too small to hold a header") {
		t.Errorf("100-byte device: %v", err)
	}
	_, err := Open(backingtest.NewMem("one.cow", 16<<10, 0), Options{ChunkSize: 32})
	if err == nil || errors.Is(err, exstore.ErrCorrupt) || !strings.Contains(err.Error(), "smaller than 2 chunks of 32 sectors") {
		t.Errorf("fresh device of one chunk: %v; want a plain error asking for a larger device", err)
	}
	// A header claiming 1 GiB chunks on a small device is damage, and must
	// not make Open allocate 1 GiB buffers.
	im := validImage(1, 8)
	im.hdrSize = 1 << 21
	_, err = Open(memImage("huge.cow", im.bytes()), Options{})
	if !errors.Is(err, exstore.ErrCorrupt) || !strings.Contains(err.Error(), "smaller than the 2 chunks of 2097152 sectors") {
		t.Errorf("header with 1 GiB chunks on 4 KiB: %v", err)
	}
}

func TestOpen_HeaderBlockSizeMismatch(t *testing.T) {
	img := validImage(1, 64).bytes()
	m := memImage("m.cow", img)
	_, err := Open(&blockDev{Mem: m, lbs: 4096}, Options{})
	if !errors.Is(err, exstore.ErrInvalidChunkSize) || errors.Is(err, exstore.ErrCorrupt) || !strings.Contains(err.Error(), "cannot be used on these devices") {
		t.Errorf("1-sector chunks on a 4 KiB-block device: %v", err)
	}
}

// faultyDev fails the n-th write or flush (counting from 1) after arm.
type faultyDev struct {
	*backingtest.Mem
	ops, failAt atomic.Int64
}

var errInjected = errors.New("injected I/O error")

func (d *faultyDev) tick() error {
	if n := d.failAt.Load(); n > 0 && d.ops.Add(1) == n {
		return errInjected
	}
	return nil
}

func (d *faultyDev) WriteAt(p []byte, off int64) (int, error) {
	if err := d.tick(); err != nil {
		return 0, err
	}
	return d.Mem.WriteAt(p, off)
}

func (d *faultyDev) WriteZeroes(off, n int64) error {
	if err := d.tick(); err != nil {
		return err
	}
	return d.Mem.WriteZeroes(off, n)
}

func (d *faultyDev) Flush() error {
	if err := d.tick(); err != nil {
		return err
	}
	return d.Mem.Flush()
}

var _ backing.Device = (*faultyDev)(nil)

// TestCommit_IOErrorInvalidates: any failed step of a metadata write fails
// the commit and invalidates the store, as the kernel clears ps->valid.
func TestCommit_IOErrorInvalidates(t *testing.T) {
	// Committing the 32nd exception fills area 0: zero area 1, flush,
	// write area 0, flush. Fail each step in turn.
	for step := int64(1); step <= 4; step++ {
		t.Run(fmt.Sprintf("step%d", step), func(t *testing.T) {
			dev := &faultyDev{Mem: backingtest.NewMem("f.cow", 64*512, 0)}
			s, err := Open(dev, Options{ChunkSize: 1})
			if err != nil {
				t.Fatal(err)
			}
			mustLoad(t, s)
			for i := range 31 {
				c, _ := s.Prepare()
				if err := s.Commit(exstore.Exception{Old: exstore.Chunk(i), New: c}); err != nil {
					t.Fatal(err)
				}
			}
			dev.failAt.Store(step)
			c, _ := s.Prepare()
			err = s.Commit(exstore.Exception{Old: 99, New: c})
			if !errors.Is(err, errInjected) {
				t.Fatalf("commit with a failing step %d: %v", step, err)
			}
			if _, err := s.Prepare(); !errors.Is(err, exstore.ErrInvalidated) {
				t.Errorf("Prepare after a failed commit: %v, want ErrInvalidated", err)
			}
			if err := s.Drop(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(dev, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s2.Load(func(exstore.Exception) error { return nil }); !errors.Is(err, exstore.ErrInvalidated) {
				t.Errorf("reload after Drop: %v, want ErrInvalidated", err)
			}
		})
	}
}

func TestLoad_CallbackErrorStops(t *testing.T) {
	dev := memImage("p.cow", validImage(8, 8, run(1, 2, 3)).bytes())
	s, err := Open(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("table full")
	n := 0
	err = s.Load(func(exstore.Exception) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Errorf("Load with a failing callback: %v after %d calls, want the callback's error after 2", err, n)
	}
}

func TestStatus_Overflow(t *testing.T) {
	s, err := Open(backingtest.NewMem("o.cow", 64<<10, 0), Options{ChunkSize: 16, Overflow: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Status(exstore.StatusTable); got != "PO 16" {
		t.Errorf("Status(table) = %q, want \"PO 16\"", got)
	}
	if got := s.Status(exstore.StatusInfo); got != "" {
		t.Errorf("Status(info) = %q, want \"\"", got)
	}
}

// TestCommit_ZeroesNextAreaBeforeFillingOne: the zeroing of the next area
// must be flushed before the full area is written, so a crash in between
// cannot leave a full area followed by old bytes.
func TestCommit_ZeroesNextAreaBeforeFillingOne(t *testing.T) {
	dev := &orderDev{Mem: backingtest.NewMem("o.cow", 80*512, 0)}
	s, err := Open(dev, Options{ChunkSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	mustLoad(t, s)
	for i := range 32 {
		c, _ := s.Prepare()
		if i == 31 {
			dev.log = nil
		}
		if err := s.Commit(exstore.Exception{Old: exstore.Chunk(i), New: c}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"zero chunk 34", "flush", "write chunk 1", "flush"}
	if fmt.Sprint(dev.log) != fmt.Sprint(want) {
		t.Errorf("I/O for the commit that fills area 0: %q, want %q", dev.log, want)
	}
}

type orderDev struct {
	*backingtest.Mem
	log []string
}

func (d *orderDev) WriteAt(p []byte, off int64) (int, error) {
	d.log = append(d.log, fmt.Sprintf("write chunk %d", off/512))
	return d.Mem.WriteAt(p, off)
}

func (d *orderDev) WriteZeroes(off, n int64) error {
	d.log = append(d.log, fmt.Sprintf("zero chunk %d", off/512))
	return d.Mem.WriteZeroes(off, n)
}

func (d *orderDev) Flush() error {
	d.log = append(d.log, "flush")
	return d.Mem.Flush()
}

// TestPrepareMerge_RereadAreaChecked: the previous area is read again when
// a merge empties the current one; damage found there is corruption, not a
// run of chunks to copy over the origin.
func TestPrepareMerge_RereadAreaChecked(t *testing.T) {
	dev := memImage("m.cow", validImage(1, 40, run(100, 2, 32), nil).bytes())
	s, err := Open(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, s); len(got) != 32 {
		t.Fatalf("loaded %d exceptions, want 32", len(got))
	}
	// Record 31 of area 0 (chunk 1) now points at area 1 (chunk 34).
	binaryPutNew(dev.Bytes()[512+31*16:], 34)
	_, _, err = s.PrepareMerge()
	if !errors.Is(err, exstore.ErrCorrupt) || !strings.Contains(err.Error(), "record 31 at byte 1016: new_chunk 34 is not a data chunk") {
		t.Errorf("PrepareMerge over a damaged area: %v, want ErrCorrupt naming record 31", err)
	}
}

func binaryPutNew(rec []byte, c uint64) {
	for i := range 8 {
		rec[8+i] = byte(c >> (8 * i))
	}
}
