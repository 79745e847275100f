package backing

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fileDevice is a regular file on a block file system (ext4, xfs...): I/O
// goes through the page cache with pread/pwrite.
type fileDevice struct {
	fdDevice
}

func newFile(f *os.File, path string, st *unix.Stat_t, opts Options) (*fileDevice, error) {
	if st.Size == 0 {
		return nil, fmt.Errorf("open backing device %s: the file is empty: size it first with truncate (truncate -s 1G %s)", path, shellArg(path))
	}
	p := props{path: path, id: idOf(st), kind: KindFile, size: st.Size, lbs: 512, ro: opts.ReadOnly}
	return &fileDevice{fdDevice{base: base{props: p}, f: f, fd: int(f.Fd())}}, nil
}

// Discard punches a hole; a file system that cannot gets zeroes written.
func (d *fileDevice) Discard(off, n int64) error {
	return d.zero("discard", off, n, punchHole)
}

// WriteZeroes zeroes the range keeping it allocated (ZERO_RANGE), else
// writes zeroes. It never punches a hole: a file whose blocks were
// reserved up front (a COW file) must not lose them, or a later write
// could fail on a full file system.
func (d *fileDevice) WriteZeroes(off, n int64) error {
	return d.zero("write zeroes", off, n, zeroRange)
}

// zero tries each fallocate mode in turn and falls back to writing zeroes
// when the file system supports none of them.
func (d *fileDevice) zero(op string, off, n int64, modes ...uint32) error {
	if err := d.enter(op, off, n, writes); err != nil {
		return err
	}
	defer d.mu.RUnlock()
	if n == 0 {
		return nil
	}
	for _, mode := range modes {
		supported, err := d.fallocate(mode, off, n)
		if err != nil {
			return d.ioErr(op, off, n, fmt.Errorf("fallocate(%#x): %w", mode, err))
		}
		if supported {
			return nil
		}
	}
	if err := writeZeroes(d.f, off, n); err != nil {
		return d.ioErr(op, off, n, err)
	}
	return nil
}

// Reprobe takes in a file that grew since it was opened (see Reprober).
func (d *fileDevice) Reprobe() error {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return fmt.Errorf("reprobe %s: fstat: %w", d.path, err)
	}
	return d.grow(st.Size)
}

var (
	_ Device   = (*fileDevice)(nil)
	_ Reprober = (*fileDevice)(nil)
)
