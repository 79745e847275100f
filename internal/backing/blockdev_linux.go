package backing

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// blockDevice is a block device node: I/O through the page cache of the
// node with pread/pwrite, zeroing with the block layer's own operations.
type blockDevice struct {
	fdDevice
}

func openBlock(path string, opts Options) (Device, error) {
	f, st, err := openNode(path, opts, unix.S_IFBLK)
	if err != nil {
		return nil, err
	}
	d, err := newBlock(f, path, st, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func newBlock(f *os.File, path string, st *unix.Stat_t, opts Options) (*blockDevice, error) {
	fd := int(f.Fd())
	var size uint64
	if err := ioctlPtr(fd, unix.BLKGETSIZE64, unsafe.Pointer(&size)); err != nil {
		return nil, fmt.Errorf("open backing device %s: BLKGETSIZE64: %w", path, err)
	}
	if size == 0 {
		return nil, fmt.Errorf("open backing device %s: the block device has size 0 (an unconfigured loop device, or no medium?)", path)
	}
	lbs, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
	if err != nil {
		return nil, fmt.Errorf("open backing device %s: BLKSSZGET: %w", path, err)
	}
	if lbs < 512 || lbs&(lbs-1) != 0 {
		return nil, fmt.Errorf("open backing device %s: logical block size %d is not a power of two ≥ 512", path, lbs)
	}
	p := props{path: path, id: idOf(st), kind: KindBlock, size: int64(size), lbs: lbs, ro: opts.ReadOnly}
	return &blockDevice{fdDevice{base: base{props: p}, f: f, fd: fd}}, nil
}

// Reprobe takes in a block device that grew since it was opened (see
// Reprober).
func (d *blockDevice) Reprobe() error {
	var size uint64
	if err := ioctlPtr(d.fd, unix.BLKGETSIZE64, unsafe.Pointer(&size)); err != nil {
		return fmt.Errorf("reprobe %s: BLKGETSIZE64: %w", d.path, err)
	}
	return d.grow(int64(size))
}

// Discard zeroes and deallocates the range: fallocate(PUNCH_HOLE) on a
// block device is the block layer's write-zeroes with unmap, which reads
// back as zeroes. BLKDISCARD alone would not promise that (discarded blocks
// may return old data), so it is not used. A device that cannot unmap
// zeroes gets BLKZEROOUT: zeroes are the contract, deallocation a hint.
func (d *blockDevice) Discard(off, n int64) error {
	return d.zero("discard", off, n, unmapBlocks)
}

// WriteZeroes zeroes the range keeping it allocated (BLKZEROOUT).
func (d *blockDevice) WriteZeroes(off, n int64) error {
	return d.zero("write zeroes", off, n, keepBlocks)
}

// zeroing says whether zeroed blocks may be deallocated.
type zeroing int

const (
	keepBlocks  zeroing = iota // BLKZEROOUT: stay allocated
	unmapBlocks                // PUNCH_HOLE when the device can, else BLKZEROOUT
)

// zero handles the whole logical blocks of the range in the block layer
// and writes zeroes over partial blocks at either end.
func (d *blockDevice) zero(op string, off, n int64, z zeroing) error {
	if err := d.enter(op, off, n, writes); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	head, inner, tail := splitAligned(off, n, int64(d.lbs))
	if inner.n > 0 {
		if err := d.zeroBlocks(inner, z); err != nil {
			return d.ioErr(op, inner.off, inner.n, err)
		}
	}
	for _, s := range []span{head, tail} {
		if err := writeZeroes(d.f, s.off, s.n); err != nil {
			return d.ioErr(op, s.off, s.n, err)
		}
	}
	return nil
}

func (d *blockDevice) zeroBlocks(s span, z zeroing) error {
	if z == unmapBlocks {
		supported, err := d.fallocate(punchHole, s.off, s.n)
		if err != nil {
			return fmt.Errorf("fallocate(PUNCH_HOLE): %w", err)
		}
		if supported {
			return nil
		}
	}
	r := [2]uint64{uint64(s.off), uint64(s.n)}
	if err := ioctlPtr(d.fd, unix.BLKZEROOUT, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("BLKZEROOUT: %w", err)
	}
	return nil
}

// ioctlPtr is ioctl(2) with a pointer argument.
func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

var _ Device = (*blockDevice)(nil)
