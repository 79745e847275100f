package storetest_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// toy is a minimal persistent store used to test the suite itself: a
// header chunk, a region of 16-byte records ending at new == 0, then data.
// Its bugs can be switched on one at a time; without them it passes every
// check but ConcurrentCommits (it has no group commit).
type toy struct {
	dev       backing.Device
	bugs      toyBugs
	chunk     exstore.Sector
	devChunks exstore.Chunk
	first     exstore.Chunk // first data chunk
	fresh     bool

	mu       sync.Mutex
	loaded   bool
	closed   bool
	valid    bool
	n        int64 // records
	nextFree exstore.Chunk
}

type toyBugs struct {
	noPreFlush  bool // metadata written before the data is flushed
	noPostFlush bool // Commit returns before the record is flushed
	noZero      bool // the record region is not zeroed: no end marker after the last record
}

const toyMagic = 0x21796f54 // "Toy!"

func openToy(dev backing.Device, chunk exstore.Sector, bugs toyBugs) (exstore.Store, error) {
	t := &toy{dev: dev, bugs: bugs, chunk: chunk, valid: true}
	hdr := make([]byte, 512)
	if _, err := dev.ReadAt(hdr, 0); err != nil {
		return nil, err
	}
	switch binary.LittleEndian.Uint32(hdr) {
	case 0:
		t.fresh = true
	case toyMagic:
		t.chunk = exstore.Sector(binary.LittleEndian.Uint32(hdr[8:]))
		t.valid = binary.LittleEndian.Uint32(hdr[4:]) != 0
	default:
		return nil, exstore.Corruptf("toy: bad magic")
	}
	cb := t.chunk.Bytes()
	t.devChunks = exstore.Chunk(dev.Size() / cb)
	t.first = exstore.Chunk(1 + (int64(t.devChunks)*16+cb-1)/cb)
	t.nextFree = t.first
	return t, nil
}

func (t *toy) recOff(i int64) int64 { return t.chunk.Bytes() + 16*i }

func (t *toy) writeHeader(valid uint32) error {
	hdr := make([]byte, 512)
	binary.LittleEndian.PutUint32(hdr, toyMagic)
	binary.LittleEndian.PutUint32(hdr[4:], valid)
	binary.LittleEndian.PutUint32(hdr[8:], uint32(t.chunk))
	if _, err := t.dev.WriteAt(hdr, 0); err != nil {
		return err
	}
	return t.dev.Flush()
}

func (t *toy) Load(fn func(exstore.Exception) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.loaded {
		return exstore.ErrLoaded
	}
	t.loaded = true
	if !t.valid {
		return exstore.ErrInvalidated
	}
	if t.fresh {
		if !t.bugs.noZero {
			if err := t.dev.WriteZeroes(t.recOff(0), int64(t.first-1)*t.chunk.Bytes()); err != nil {
				return err
			}
			if err := t.dev.Flush(); err != nil {
				return err
			}
		}
		return t.writeHeader(1)
	}
	rec := make([]byte, 16)
	for ; t.recOff(t.n) < int64(t.first)*t.chunk.Bytes(); t.n++ {
		if _, err := t.dev.ReadAt(rec, t.recOff(t.n)); err != nil {
			return err
		}
		e := exstore.Exception{Old: exstore.Chunk(binary.LittleEndian.Uint64(rec)), New: exstore.Chunk(binary.LittleEndian.Uint64(rec[8:]))}
		if e.New == 0 {
			break
		}
		if e.New < t.first || e.New >= t.devChunks {
			return exstore.Corruptf("toy: record %d: new chunk %d out of range", t.n, e.New)
		}
		t.nextFree = max(t.nextFree, e.New+1)
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (t *toy) usable() error {
	switch {
	case t.closed:
		return exstore.ErrClosed
	case !t.loaded:
		return exstore.ErrNotLoaded
	case !t.valid:
		return exstore.ErrInvalidated
	}
	return nil
}

func (t *toy) Prepare() (exstore.Chunk, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(); err != nil {
		return 0, err
	}
	if t.nextFree >= t.devChunks {
		return 0, exstore.ErrNoSpace
	}
	t.nextFree++
	return t.nextFree - 1, nil
}

func (t *toy) Commit(e exstore.Exception) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(); err != nil {
		return err
	}
	if e.New < t.first || e.New >= t.devChunks {
		return fmt.Errorf("toy: chunk %d out of range", e.New)
	}
	if !t.bugs.noPreFlush {
		if err := t.dev.Flush(); err != nil {
			return err
		}
	}
	rec := make([]byte, 16)
	binary.LittleEndian.PutUint64(rec, uint64(e.Old))
	binary.LittleEndian.PutUint64(rec[8:], uint64(e.New))
	if _, err := t.dev.WriteAt(rec, t.recOff(t.n)); err != nil {
		return err
	}
	if !t.bugs.noPostFlush {
		if err := t.dev.Flush(); err != nil {
			return err
		}
	}
	t.n++
	return nil
}

func (t *toy) PrepareMerge() (exstore.Exception, int, error) {
	return exstore.Exception{}, 0, exstore.ErrMergeUnsupported
}
func (t *toy) CommitMerge(int) error { return exstore.ErrMergeUnsupported }

func (t *toy) Drop() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.valid = false
	return t.writeHeader(0)
}

func (t *toy) Usage() (allocated, total, metadata exstore.Sector) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return exstore.Sector(t.nextFree) * t.chunk, exstore.Sector(t.dev.Size() / 512), exstore.Sector(t.first) * t.chunk
}

func (t *toy) ChunkSize() exstore.Sector { return t.chunk }

func (t *toy) Status(kind exstore.StatusType) string {
	if kind == exstore.StatusTable {
		return fmt.Sprintf("T %d", t.chunk)
	}
	return ""
}

func (t *toy) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	return nil
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }
