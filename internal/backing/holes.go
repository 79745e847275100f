package backing

import (
	"errors"

	"golang.org/x/sys/unix"
)

// HoleFinder is implemented by devices that know which of their ranges
// store no data: files, through SEEK_DATA and SEEK_HOLE. A hole (never
// written, punched, or reserved but never written on tmpfs and ext4)
// reads back as zeroes.
type HoleFinder interface {
	// Allocated reports whether [off, off+n) starts with data or with a
	// hole, and how many bytes from off (1 to n) are alike.
	Allocated(off, n int64) (data bool, length int64, err error)
}

// FastZeroer is implemented by devices whose WriteZeroes costs less than
// writing the zeroes: a file zeroes or punches ranges with fallocate, a
// memory region clears its pages in place with no I/O.
type FastZeroer interface {
	FastZero() bool
}

var (
	_ HoleFinder = (*fileDevice)(nil)
	_ HoleFinder = (*memory)(nil)
	_ FastZeroer = (*fileDevice)(nil)
	_ FastZeroer = (*memory)(nil)
)

func (d *fileDevice) Allocated(off, n int64) (bool, int64, error) {
	if err := d.enter("seek data", off, n, reads); err != nil {
		return true, 0, err
	}
	defer d.mu.RUnlock()
	data, length, err := seekAllocated(d.fd, off, n)
	if err != nil {
		return true, 0, d.ioErr("seek data", off, n, err)
	}
	return data, length, nil
}

func (d *fileDevice) FastZero() bool { return true }

// Allocated reports the holes of a memory file; a devdax device has none.
func (m *memory) Allocated(off, n int64) (bool, int64, error) {
	if err := m.enter("seek data", off, n, reads); err != nil {
		return true, 0, err
	}
	defer m.mu.RUnlock()
	if !m.file {
		return true, n, nil
	}
	data, length, err := seekAllocated(m.fd, off, n)
	if err != nil {
		return true, 0, m.ioErr("seek data", off, n, err)
	}
	return data, length, nil
}

func (m *memory) FastZero() bool { return true }

// seekAllocated answers Allocated with lseek: a file system that cannot
// tell (EINVAL) reports data.
func seekAllocated(fd int, off, n int64) (bool, int64, error) {
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO): // no data from off to the end
		return false, n, nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
		return true, n, nil
	case err != nil:
		return true, 0, err
	case data > off:
		return false, min(data-off, n), nil
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil {
		return true, 0, err
	}
	return true, max(1, min(hole-off, n)), nil
}
