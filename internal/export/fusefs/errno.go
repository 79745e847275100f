package fusefs

import (
	"errors"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// op names the file operation an error answers; the same device error
// means different things to different calls.
type op int

const (
	opOpen op = iota
	opRead
	opWrite
	opAllocate
	opFsync
)

// errnoOf maps a device error to the errno the kernel hands the caller
// of op. It is the only place device errors become errno.
func errnoOf(o op, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, dm.ErrReadOnly):
		return syscall.EROFS
	case errors.Is(err, dm.ErrOutOfRange):
		if o == opAllocate || o == opRead {
			return syscall.EINVAL
		}
		return syscall.ENOSPC
	case errors.Is(err, dm.ErrNotFound):
		if o == opOpen {
			return syscall.ENOENT
		}
		return syscall.ENXIO
	}
	switch e := dm.Errno(err); e {
	case syscall.EIO, syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG, syscall.EINVAL,
		syscall.ENXIO, syscall.EOPNOTSUPP, syscall.EROFS, syscall.EPERM, syscall.EACCES,
		syscall.ENOMEM, syscall.EBUSY:
		return e
	}
	// ENOSYS would make the kernel stop sending the operation for the
	// whole mount; EINTR, EAGAIN and the like mean nothing to a file
	// user here. The I/O failed.
	return syscall.EIO
}
