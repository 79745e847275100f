//go:build race

package rawsys

import (
	"errors"
	"syscall"
)

// Under the race detector: through package syscall (see the package
// comment); the runtime's bookkeeping comes with it, and speed does not
// matter here.

func Read(fd int, p []byte) (int, syscall.Errno) {
	return retry(func() (int, error) { return syscall.Read(fd, p) })
}

func Write(fd int, p []byte) (int, syscall.Errno) {
	return retry(func() (int, error) { return syscall.Write(fd, p) })
}

func Pread(fd int, p []byte, off int64) (int, syscall.Errno) {
	return retry(func() (int, error) { return syscall.Pread(fd, p, off) })
}

func Pwrite(fd int, p []byte, off int64) (int, syscall.Errno) {
	return retry(func() (int, error) { return syscall.Pwrite(fd, p, off) })
}

func retry(call func() (int, error)) (int, syscall.Errno) {
	for {
		n, err := call()
		if err == nil {
			return n, 0
		}
		errno := syscall.EIO
		errors.As(err, &errno)
		if errno != syscall.EINTR {
			return 0, errno
		}
	}
}
