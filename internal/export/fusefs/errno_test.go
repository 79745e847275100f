package fusefs

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// Ensure that every device error class becomes the errno a file user
// expects for the call that met it, and that nothing the kernel would
// misread (ENOSYS turns an operation off for the whole mount) gets out.
func TestErrnoOf(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("vol: line 1 (linear): %w", err) }
	for _, tc := range []struct {
		op   op
		err  error
		want syscall.Errno
	}{
		{opRead, nil, 0},
		{opWrite, wrap(dm.ErrReadOnly), syscall.EROFS},
		{opAllocate, wrap(dm.ErrReadOnly), syscall.EROFS},
		{opWrite, wrap(dm.ErrOutOfRange), syscall.ENOSPC},
		{opAllocate, wrap(dm.ErrOutOfRange), syscall.EINVAL},
		{opRead, wrap(dm.ErrOutOfRange), syscall.EINVAL},
		{opRead, wrap(dm.ErrIO), syscall.EIO},
		{opWrite, wrap(dm.ErrNoSpace), syscall.ENOSPC},
		{opAllocate, wrap(dm.ErrNotSupported), syscall.EOPNOTSUPP},
		{opRead, wrap(dm.ErrNoTable), syscall.ENXIO},
		{opOpen, wrap(dm.ErrNotFound), syscall.ENOENT},
		{opRead, wrap(dm.ErrNotFound), syscall.ENXIO},
		{opOpen, wrap(dm.ErrBusy), syscall.EBUSY},
		{opWrite, wrap(dm.ErrInvalidArgument), syscall.EINVAL},
		{opFsync, wrap(syscall.EIO), syscall.EIO},
		{opWrite, wrap(syscall.EDQUOT), syscall.EDQUOT},
		{opWrite, wrap(syscall.ENOMEM), syscall.ENOMEM},
		{opRead, wrap(syscall.ENOSYS), syscall.EIO},
		{opRead, wrap(syscall.EINTR), syscall.EIO},
		{opRead, wrap(syscall.EAGAIN), syscall.EIO},
		{opFsync, errors.New("something unexpected"), syscall.EIO},
	} {
		if got := errnoOf(tc.op, tc.err); got != tc.want {
			t.Errorf("errnoOf(%d, %v) = %v, want %v", tc.op, tc.err, got, tc.want)
		}
	}
}
