//go:build !race

package backing

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// filePread and filePwrite are pread(2) and pwrite(2) of a tmpfs file
// without the runtime's system call bookkeeping (RawSyscall). Through
// package unix each call enters the runtime's syscall state, which wakes
// its sysmon thread when every P was idle (an NBD reader between bursts):
// a futex wake, then polling every 20 µs, 6-10 % of the daemon on first
// writes after a snapshot. A pread or pwrite of tmpfs memory blocks no
// longer than the load or store through the mapping that it replaces,
// which holds its P through a page fault just the same.
func filePread(fd int, p []byte, off int64) (int, error) {
	return rawFileIO(unix.SYS_PREAD64, fd, p, off)
}

func filePwrite(fd int, p []byte, off int64) (int, error) {
	return rawFileIO(unix.SYS_PWRITE64, fd, p, off)
}

func rawFileIO(trap uintptr, fd int, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(off), 0, 0)
	if e != 0 {
		return int(r), syscall.Errno(e)
	}
	return int(r), nil
}
