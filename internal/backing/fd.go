package backing

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// fdDevice is the part shared by devices served with pread/pwrite through
// their descriptor: regular files and block devices.
type fdDevice struct {
	base
	f  *os.File
	fd int
}

func (d *fdDevice) ReadAt(p []byte, off int64) (int, error) {
	if err := d.enter("read", off, int64(len(p)), reads); err != nil {
		return 0, err
	}
	defer d.mu.RUnlock()
	n, err := d.f.ReadAt(p, off)
	if err != nil {
		// A short read inside Size means the file shrank under us.
		return n, d.ioErr("read", off, int64(len(p)), err)
	}
	return n, nil
}

func (d *fdDevice) WriteAt(p []byte, off int64) (int, error) {
	if err := d.enter("write", off, int64(len(p)), writes); err != nil {
		return 0, err
	}
	defer d.mu.RUnlock()
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, d.ioErr("write", off, int64(len(p)), err)
	}
	return n, nil
}

// Flush writes dirty pages back and, for block devices, flushes the
// device's volatile cache (fdatasync).
func (d *fdDevice) Flush() error {
	if err := d.enter("flush", 0, 0, reads); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	if err := unix.Fdatasync(d.fd); err != nil {
		return d.ioErr("flush (fdatasync)", 0, d.size, err)
	}
	return nil
}

func (d *fdDevice) Close() error {
	if err := d.shut(); err != nil {
		return err
	}
	defer d.mu.Unlock()
	return d.f.Close()
}

// fallocate runs fallocate(2) on the range and reports whether the file
// system or device supports mode at all.
func (d *fdDevice) fallocate(mode uint32, off, n int64) (supported bool, err error) {
	err = unix.Fallocate(d.fd, mode, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return false, nil
	}
	return true, err
}

const (
	punchHole = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
	zeroRange = unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
)
