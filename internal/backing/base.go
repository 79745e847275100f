package backing

import (
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// props is what every device reports, fixed when it is opened.
type props struct {
	path string
	id   ID
	kind Kind
	size int64
	lbs  int
	caps Capability
	ro   bool
}

// base adds the open/closed state that guards a device's resources (see
// the package doc for the locking rule).
type base struct {
	props
	mu     sync.RWMutex
	closed bool
}

func (b *base) Path() string             { return b.path }
func (b *base) ID() ID                   { return b.id }
func (b *base) Kind() Kind               { return b.kind }
func (b *base) Size() int64              { b.mu.RLock(); defer b.mu.RUnlock(); return b.size }
func (b *base) LogicalBlockSize() int    { return b.lbs }
func (b *base) Capabilities() Capability { return b.caps }
func (b *base) ReadOnly() bool           { return b.ro }

// grow takes in a larger size once no operation runs; never a smaller one.
func (b *base) grow(size int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("reprobe %s: %w", b.path, ErrClosed)
	}
	b.size = max(b.size, size)
	return nil
}

// intent says whether an operation changes the device's data.
type intent int

const (
	reads  intent = iota // read, flush, seek, map: allowed read-only
	writes               // write, discard, zero, populate: refused read-only
)

// enter starts an operation on [off, off+n): it holds mu shared and checks
// that the device is open, writable when the operation writes, and holds
// the range. On success the caller must release mu with b.mu.RUnlock.
func (b *base) enter(op string, off, n int64, in intent) error {
	b.mu.RLock()
	var err error
	switch {
	case b.closed:
		err = fmt.Errorf("%s on %s: %w", op, b.path, ErrClosed)
	case in == writes && b.ro:
		err = fmt.Errorf("%s is opened read-only: %w", b.path, syscall.EROFS)
	case off < 0 || n < 0 || off > b.size || n > b.size-off:
		err = fmt.Errorf("%s of %d bytes at offset %d on %s: %w of %d bytes", op, n, off, b.path, ErrOutOfRange, b.size)
	}
	if err != nil {
		b.mu.RUnlock()
	}
	return err
}

// shut marks the device closed once no operation runs. On success mu stays
// held exclusively until the caller, having released its resources, unlocks.
func (b *base) shut() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("close %s: %w", b.path, ErrClosed)
	}
	b.closed = true
	return nil
}

// ioErr gives a failed operation its context.
func (b *base) ioErr(op string, off, n int64, err error) error {
	return fmt.Errorf("%s of %d bytes at offset %d on %s: %w", op, n, off, b.path, err)
}

// idOf identifies what st describes. Device nodes are keyed by the device
// they name (st_rdev) so that two nodes or links for one disk match.
func idOf(st *unix.Stat_t) ID {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK, unix.S_IFCHR:
		return ID{Dev: uint64(st.Rdev), Ino: 0}
	}
	return ID{Dev: uint64(st.Dev), Ino: st.Ino}
}
