//go:build !race

package nbd

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawIO is read(2) or write(2) (trap) of p on a non-blocking fd, retried
// on EINTR, without the runtime's system call bookkeeping.
func rawIO(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		r, _, e := unix.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			return int(r), e
		}
	}
}
