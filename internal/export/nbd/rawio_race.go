//go:build race

package nbd

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawIO under the race detector goes through package syscall, whose
// reads and writes tell the detector that what was written before a
// write to a socket happens before what follows the read of it (the
// server's I/O and a test's direct access to its backend are ordered by
// the requests and replies between them). The runtime's bookkeeping
// comes with it; speed does not matter here.
func rawIO(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		var n int
		var err error
		if trap == unix.SYS_READ {
			n, err = syscall.Read(int(fd), p)
		} else {
			n, err = syscall.Write(int(fd), p)
		}
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
