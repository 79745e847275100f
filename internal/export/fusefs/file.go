package fusefs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fallocate modes (linux/falloc.h) a device file accepts.
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
)

// zeroes is written where a range must read back as zeroes and the
// device cannot zero it otherwise. WriteAt never modifies its buffer.
var zeroes = make([]byte, 1<<20)

// file is one open of a device file (one FUSE file handle).
type file struct {
	x       *fileSystem
	name    string // the device's name when opened, for logs
	be      Backend
	release func()
	once    sync.Once
	dirty   atomic.Bool // written since the last flush
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileFsyncer   = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileAllocater = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
)

// Read reads as a file does: 0 bytes at or past the end, short across it.
func (f *file) Read(_ context.Context, dest []byte, off int64) (res fuse.ReadResult, errno syscall.Errno) {
	defer func() {
		n := 0
		if res != nil {
			n = res.Size()
		}
		f.x.stats.count(opRead, n, errno)
	}()
	size := f.be.Size()
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	n := min(int64(len(dest)), size-off)
	if n >= lendMin {
		if mem, release, ok := dm.LendFrom(f.be, off, n); ok {
			if int64(len(mem)) == n {
				return &lentRead{mem: mem, release: release}, 0
			}
			release() // across a table line: copy it
		}
	}
	m, err := f.be.ReadAt(dest[:n], off)
	if errors.Is(err, dm.ErrOutOfRange) {
		// The device shrank since Size: what was read is what is left.
		return fuse.ReadResultData(dest[:m]), 0
	}
	if err != nil {
		return nil, errnoOf(opRead, err)
	}
	return fuse.ReadResultData(dest[:m]), 0
}

// lendMin is the smallest read answered from lent memory: below it, the
// copy it saves costs less than the lending.
const lendMin = 4096

// lentRead answers a read from lent memory (dm.Lender). It is a vectored
// result (go-fuse's withSlice: Slices), which go-fuse writes to the
// kernel with writev and only then calls Done; for any other result it
// calls Done before the write when splice is off, as it is here, and the
// memory would go back while the reply was still to be copied from it.
type lentRead struct {
	mem     []byte
	release func()
	vec     [1][]byte
	done    bool
}

func (r *lentRead) Size() int                          { return len(r.mem) }
func (r *lentRead) Bytes([]byte) ([]byte, fuse.Status) { return r.mem, fuse.OK }
func (r *lentRead) Slices() ([][]byte, fuse.Status)    { r.vec[0] = r.mem; return r.vec[:], fuse.OK }
func (r *lentRead) Done() {
	if !r.done {
		r.done = true
		r.release()
	}
}

// Write writes as to a block device: ENOSPC at or past the end, short
// across it.
func (f *file) Write(_ context.Context, data []byte, off int64) (written uint32, errno syscall.Errno) {
	defer func() { f.x.stats.count(opWrite, int(written), errno) }()
	size := f.be.Size()
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if len(data) == 0 {
		return 0, 0
	}
	if off >= size {
		return 0, syscall.ENOSPC
	}
	n := min(int64(len(data)), size-off)
	f.dirty.Store(true)
	m, err := f.be.WriteAt(data[:n], off)
	if err != nil {
		return 0, errnoOf(opWrite, err)
	}
	return uint32(m), 0
}

// Allocate serves fallocate: punching a hole or zeroing a range makes
// it read back as zeroes; nothing else is supported.
func (f *file) Allocate(_ context.Context, off, n uint64, mode uint32) (errno syscall.Errno) {
	defer func() { f.x.stats.count(opAllocate, 0, errno) }()
	switch mode &^ fallocKeepSize {
	case fallocPunchHole, fallocZeroRange:
	default:
		return syscall.EOPNOTSUPP
	}
	size := uint64(f.be.Size())
	if off >= size || n == 0 {
		return syscall.EINVAL
	}
	if n > size-off {
		if mode&fallocKeepSize == 0 {
			return syscall.EINVAL // the file would have to grow
		}
		n = size - off
	}
	f.dirty.Store(true)
	return errnoOf(opAllocate, f.zero(int64(off), int64(n)))
}

func (f *file) zero(off, n int64) error {
	err := f.be.WriteZeroes(off, n)
	if err == nil || dm.Errno(err) != syscall.EOPNOTSUPP {
		return err
	}
	for n > 0 {
		chunk := min(n, int64(len(zeroes)))
		if _, err := f.be.WriteAt(zeroes[:chunk], off); err != nil {
			return err
		}
		off, n = off+chunk, n-chunk
	}
	return nil
}

// Fsync makes every completed write durable (fsync and fdatasync alike).
func (f *file) Fsync(context.Context, uint32) (errno syscall.Errno) {
	defer func() { f.x.stats.count(opFsync, 0, errno) }()
	f.dirty.Store(false)
	if err := f.be.Flush(); err != nil {
		f.dirty.Store(true)
		return errnoOf(opFsync, err)
	}
	return 0
}

// Flush is close(2): it flushes the device if this file wrote to it
// since its last flush, so that close reports a failed write-back.
func (f *file) Flush(ctx context.Context) syscall.Errno {
	if !f.dirty.Load() {
		return 0
	}
	return f.Fsync(ctx, 0)
}

// Release is the kernel letting go of the file: the device's open ends.
func (f *file) Release(context.Context) syscall.Errno {
	f.close()
	return 0
}

func (f *file) close() {
	f.once.Do(func() {
		f.x.mu.Lock()
		delete(f.x.open, f)
		f.x.mu.Unlock()
		f.release()
	})
}
