package nbd

import (
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/rawsys"
)

// Socket I/O that keeps the Go runtime's monitor thread asleep. When
// every P is idle (the reader parked, waiting for the client), sysmon
// sleeps until some goroutine enters a system call; a read through
// net.Conn enters one, so each burst woke sysmon (a futex wake that
// often took the reader's CPU), which then polled every 20 µs until
// the reader parked again: a quarter of the daemon's CPU at 4 KiB, and
// context switches on the CPU the client needs. A non-blocking socket
// read or write cannot block, so it may skip the runtime's system call
// bookkeeping (RawSyscall) as it skips the P hand-off; waiting for the
// socket still goes through the netpoller (RawConn), with its
// deadlines and Close.

// rawSocket reads and writes a socket with raw system calls.
type rawSocket struct {
	rc syscall.RawConn
}

// newRawSocket returns nc's socket for raw I/O, or nil when nc is not a
// plain socket (TLS, net.Pipe).
func newRawSocket(nc net.Conn) *rawSocket {
	switch nc.(type) {
	case *net.UnixConn, *net.TCPConn:
	default:
		return nil
	}
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	return &rawSocket{rc: rc}
}

func (s *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		n, errno = rawsys.Read(int(fd), p)
		return errno != syscall.EAGAIN
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *rawSocket) Write(p []byte) (int, error) {
	done := 0
	var errno syscall.Errno
	err := s.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			var n int
			n, errno = rawsys.Write(int(fd), p[done:])
			if errno == syscall.EAGAIN {
				errno = 0
				return false // wait until the socket has room
			}
			if errno != 0 {
				return true
			}
			done += n
		}
		return true
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("write", errno)
	}
	return done, err
}

// tryWritev writes bufs as far as the socket takes them now, without
// waiting for room, and returns the bytes written. A full socket is no
// error: the caller sends the rest another way.
func (s *rawSocket) tryWritev(bufs [][]byte) (int, error) {
	done := 0
	var werr error
	err := s.rc.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			n, err := unix.Writev(int(fd), bufs)
			switch err {
			case nil:
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return true
			default:
				werr = os.NewSyscallError("writev", err)
				return true
			}
			done += n
			for len(bufs) > 0 && n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
			}
			if len(bufs) > 0 {
				bufs[0] = bufs[0][n:]
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return done, err
}
