package nbd

import (
	"errors"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// nbdErrno maps a backend error to the NBD error a client sees for request
// r. It is the only place errors become NBD error numbers. Classes come
// from dm.Errno; the spec then narrows them: ENOTSUP only answers a fast
// zero, EOVERFLOW only a don't-fragment read, and reads, trims and status
// queries past the end are EINVAL, not ENOSPC.
func nbdErrno(err error, r *request) uint32 {
	if err == nil {
		return 0
	}
	if errors.Is(err, dm.ErrOutOfRange) && r.typ != cmdWrite && r.typ != cmdWriteZeroes {
		return errInval
	}
	switch dm.Errno(err) {
	case syscall.EPERM, syscall.EROFS, syscall.EACCES:
		return errPerm
	case syscall.EIO:
		return errIO
	case syscall.ENOMEM:
		return errNoMem
	case syscall.EINVAL:
		return errInval
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
		return errNoSpc
	case syscall.EOVERFLOW:
		if r.flags&cmdFlagDF != 0 {
			return errOverflow
		}
		return errInval
	case syscall.EOPNOTSUPP:
		if r.flags&cmdFlagFastZero != 0 {
			return errNotSup
		}
		return errInval
	case syscall.ESHUTDOWN:
		return errShutdown
	}
	// EBUSY, ENXIO and anything unknown: the I/O failed, and a block
	// client can do nothing better with it.
	return errIO
}
