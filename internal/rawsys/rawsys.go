//go:build !race

// Package rawsys makes read(2), write(2), pread(2) and pwrite(2) as raw
// system calls, outside the Go runtime's system call state, for calls
// that cannot block long: a non-blocking socket (NBD) and a tmpfs file
// (first writes after a snapshot). Entering that state wakes the
// runtime's sysmon whenever every P was idle (an NBD reader between
// bursts), which then polls every 20 µs until the reader parks again: a
// quarter of the daemon's CPU at 4 KiB NBD writes, and 6-10 % on first
// writes. A raw call holds its P, as the load or store through a mapping
// it replaces does through a page fault.
//
// Each call is retried on EINTR and returns the errno (0 for none).
// Under the race detector (rawsys_race.go) the calls go through package
// syscall, whose annotations tell the detector about the memory read and
// written and order a write to a socket before the read of it.
package rawsys

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read is read(2) of fd into p.
func Read(fd int, p []byte) (int, syscall.Errno) { return raw(unix.SYS_READ, fd, p, 0) }

// Write is write(2) of p to fd.
func Write(fd int, p []byte) (int, syscall.Errno) { return raw(unix.SYS_WRITE, fd, p, 0) }

// Pread is pread(2) of fd at off into p.
func Pread(fd int, p []byte, off int64) (int, syscall.Errno) {
	return raw(unix.SYS_PREAD64, fd, p, off)
}

// Pwrite is pwrite(2) of p to fd at off.
func Pwrite(fd int, p []byte, off int64) (int, syscall.Errno) {
	return raw(unix.SYS_PWRITE64, fd, p, off)
}

func raw(trap uintptr, fd int, p []byte, off int64) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	for {
		r, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(off), 0, 0)
		if e != syscall.EINTR {
			return int(r), e
		}
	}
}
