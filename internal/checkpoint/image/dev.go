package image

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Dev is what the image and its journal are written through: a file or
// block device here, a crash-simulating device in tests
// (storetest.CrashDev and every backing.Device satisfy it). ReadAt and
// WriteAt follow io.ReaderAt and io.WriterAt; Flush makes every completed
// write durable (fdatasync). A WriteAt past Size may grow a file, or fail
// (a block device, a full disk): a failed write fails the checkpoint.
type Dev interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Size() int64
}

// file is a Dev on a file or block device, written with O_DIRECT when the
// file system allows it (aligned buffers, offsets and lengths) and through
// the page cache otherwise. Both descriptors name one inode, so one
// fdatasync covers writes through either.
type file struct {
	path     string
	buffered *os.File
	block    bool

	mu     sync.Mutex
	direct *os.File // nil: O_DIRECT refused; why says why
	why    string
}

// openFile opens path read-write (creating it with perm when create is
// set, failing if it exists) with a second, O_DIRECT, descriptor.
func openFile(path string, create bool) (*file, error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE | os.O_EXCL
	}
	b, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := b.Stat()
	if err != nil {
		b.Close()
		return nil, err
	}
	f := &file{path: path, buffered: b, block: st.Mode()&os.ModeDevice != 0}
	switch {
	case st.Mode().IsRegular() || f.block:
	default:
		b.Close()
		return nil, fmt.Errorf("%s is a %s, not a regular file or block device", path, st.Mode().Type())
	}
	d, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		f.why = fmt.Sprintf("the file system refuses O_DIRECT (%v): writing through the page cache", errors.Unwrap(err))
	} else {
		f.direct = d
	}
	return f, nil
}

// Direct reports whether writes go around the page cache, and if not why.
func (f *file) Direct() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.direct != nil, f.why
}

// pick returns the descriptor for a transfer of p at off: the O_DIRECT one
// when it is open and everything is aligned to 4096.
func (f *file) pick(p []byte, off int64) *os.File {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.direct != nil && aligned(p, off) {
		return f.direct
	}
	return f.buffered
}

func aligned(p []byte, off int64) bool {
	return len(p) > 0 && off%align == 0 && len(p)%align == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%align == 0
}

// refused drops O_DIRECT after the kernel refused an aligned transfer
// (EINVAL: a device whose logical blocks are larger, a file system that
// takes the open but not the I/O).
func (f *file) refused(d *os.File, err error) bool {
	if !errors.Is(err, unix.EINVAL) {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.direct == d {
		f.why = fmt.Sprintf("O_DIRECT I/O failed (%v): writing through the page cache", err)
		f.direct.Close()
		f.direct = nil
	}
	return true
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	d := f.pick(p, off)
	n, err := d.ReadAt(p, off)
	if err != nil && d != f.buffered && f.refused(d, err) {
		return f.buffered.ReadAt(p, off)
	}
	return n, err
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	d := f.pick(p, off)
	n, err := d.WriteAt(p, off)
	if err != nil && d != f.buffered && f.refused(d, err) {
		return f.buffered.WriteAt(p, off)
	}
	return n, err
}

func (f *file) Flush() error {
	if err := unix.Fdatasync(int(f.buffered.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.path, Err: err}
	}
	return nil
}

func (f *file) Size() int64 {
	if f.block {
		n, err := f.buffered.Seek(0, 2)
		if err != nil {
			return 0
		}
		return n
	}
	st, err := f.buffered.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// allocate reserves [0, n) of a regular file, so that applying a
// checkpoint to the image never meets a full disk after its commit.
func (f *file) allocate(n int64) error {
	if f.block {
		return nil
	}
	err := unix.Fallocate(int(f.buffered.Fd()), 0, 0, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return f.buffered.Truncate(n) // no fallocate: sparse
	}
	if err != nil {
		return &os.PathError{Op: "fallocate", Path: f.path, Err: err}
	}
	return nil
}

func (f *file) Close() error {
	f.mu.Lock()
	d := f.direct
	f.direct = nil
	f.mu.Unlock()
	var err error
	if d != nil {
		err = d.Close()
	}
	return errors.Join(err, f.buffered.Close())
}

// alignedBuf returns n zeroed bytes starting at a 4096-aligned address.
func alignedBuf(n int64) []byte {
	b := make([]byte, n+align)
	off := int(align - uintptr(unsafe.Pointer(unsafe.SliceData(b)))%align)
	if off == align {
		off = 0
	}
	return b[off : off+int(n) : off+int(n)]
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("fsync of directory %s: %w", dir, err)
	}
	return nil
}

// readFull reads len(p) bytes at off, calling a short read an error.
func readFull(d Dev, p []byte, off int64) error {
	n, err := d.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = errors.New("short read")
	}
	return err
}

// writeFull writes p at off, calling a short write an error.
func writeFull(d Dev, p []byte, off int64) error {
	n, err := d.WriteAt(p, off)
	if err == nil && n != len(p) {
		err = errors.New("short write")
	}
	return err
}

// zeroDev makes [0, n) of d read as zeroes, durably: a regular file
// with fallocate (zeroRange), anything else by writing zeroes.
func zeroDev(d Dev, n int64) error {
	if f, ok := d.(*file); ok && f.zeroRange(n) == nil {
		return f.Flush()
	}
	return zeroDevice(d, n, align)
}

// zeroRange zeroes [0, n) of a regular file without writing data
// (fallocate ZERO_RANGE, or punching a hole and allocating it again).
func (f *file) zeroRange(n int64) error {
	if f.block {
		return errors.ErrUnsupported
	}
	fd := int(f.buffered.Fd())
	if unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 0, n) == nil {
		return nil
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, n); err != nil {
		return err
	}
	return f.allocate(n)
}
