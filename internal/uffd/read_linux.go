package uffd

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ReadEvents reads as many pending messages as fit in buf with one
// non-blocking read(2), and returns how many it read: 0 when none is
// pending. Each message goes to one reader only. A fault message stays
// pending until read, but vanishes if the faulting thread stops waiting
// first (a signal interrupted it; it faults again, with a new message, when
// it retries the access), so a handler sees one fault more than once.
func (fd *FD) ReadEvents(buf []Msg) (int, error) {
	if len(buf) == 0 {
		return 0, errors.New("userfaultfd: ReadEvents with an empty buffer")
	}
	fd.mu.RLock()
	defer fd.mu.RUnlock()
	if fd.closed {
		return 0, ErrClosed
	}
	if fd.features.Load() == 0 {
		return 0, errHandshake
	}
	return readMsgs(fd.raw, buf)
}

func readMsgs(raw int, buf []Msg) (int, error) {
	for {
		n, err := unix.Read(raw, msgBytes(buf))
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, nil
		case err != nil:
			return 0, fmt.Errorf("userfaultfd: read: %w", err)
		}
		return n / msgSize, nil
	}
}

// Poll waits in poll(2), blocking the calling thread, until a message is
// pending (true), timeout passes (false; a negative timeout waits for ever)
// or Close is called (ErrClosed). It is the lowest-latency way to block:
// the kernel wakes this thread directly.
func (fd *FD) Poll(timeout time.Duration) (bool, error) {
	fd.mu.RLock()
	defer fd.mu.RUnlock()
	if fd.closed {
		return false, ErrClosed
	}
	deadline := time.Now().Add(timeout)
	for {
		var ts *unix.Timespec
		if timeout >= 0 {
			t := unix.NsecToTimespec(max(int64(time.Until(deadline)), 0))
			ts = &t
		}
		fds := [2]unix.PollFd{{Fd: int32(fd.raw), Events: unix.POLLIN}, {Fd: int32(fd.wake), Events: unix.POLLIN}}
		n, err := unix.Ppoll(fds[:], ts, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return false, fmt.Errorf("userfaultfd: poll: %w", err)
		case n == 0:
			return false, nil
		case fds[1].Revents != 0:
			return false, ErrClosed
		case fds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0:
			return false, fmt.Errorf("userfaultfd: poll reports %#x: do the handshake (API) first, and keep the descriptor O_NONBLOCK", fds[0].Revents)
		}
		return true, nil
	}
}

// Block says how Wait blocks once it has spun.
type Block int

const (
	// BlockPoll blocks the calling thread in poll(2): the kernel wakes that
	// thread directly, the fastest wake-up, but a thread is held meanwhile.
	BlockPoll Block = iota
	// BlockNetpoll parks the goroutine in the Go runtime's poller: no
	// thread is held, but the wake-up goes through the runtime (one more
	// thread hand-off, which costs most when it crosses CPUs).
	BlockNetpoll
)

// Wait returns pending messages as ReadEvents does, but waits for at least
// one: it first reads in a busy loop for up to spin (a wake-up from sleep
// costs tens of microseconds on some machines, while a message that comes
// during the spin is seen at once), then blocks as block says. It returns
// ErrClosed when Close is called, and an error wrapping
// os.ErrDeadlineExceeded once the SetDeadline time has passed.
func (fd *FD) Wait(buf []Msg, spin time.Duration, block Block) (int, error) {
	n, err := fd.ReadEvents(buf)
	if n > 0 || err != nil {
		return n, err
	}
	if spin > 0 {
		for end := time.Now().Add(spin); time.Now().Before(end); {
			if n, err = fd.ReadEvents(buf); n > 0 || err != nil {
				return n, err
			}
		}
	}
	if block == BlockNetpoll {
		return fd.waitNetpoll(buf)
	}
	for {
		timeout := time.Duration(-1)
		if d := fd.deadline.Load(); d != 0 {
			if timeout = time.Until(time.Unix(0, d)); timeout <= 0 {
				return 0, fmt.Errorf("userfaultfd: wait: %w", os.ErrDeadlineExceeded)
			}
		}
		if _, err := fd.Poll(timeout); err != nil {
			return 0, err
		}
		if n, err = fd.ReadEvents(buf); n > 0 || err != nil {
			return n, err
		}
	}
}

func (fd *FD) waitNetpoll(buf []Msg) (int, error) {
	file, err := fd.pollFile()
	if err != nil {
		return 0, err
	}
	rc, err := file.SyscallConn()
	if err != nil {
		return 0, fd.waitError(err)
	}
	var n int
	var rerr error
	err = rc.Read(func(raw uintptr) bool {
		n, rerr = readMsgs(int(raw), buf)
		return n > 0 || rerr != nil
	})
	if err != nil {
		return 0, fd.waitError(err)
	}
	return n, rerr
}

func (fd *FD) waitError(err error) error {
	if fd.closing.Load() {
		return ErrClosed
	}
	var flags int
	if cerr := fd.Control(func(raw int) { flags, _ = unix.FcntlInt(uintptr(raw), unix.F_GETFL, 0) }); cerr == nil && flags&unix.O_NONBLOCK == 0 {
		return fmt.Errorf("userfaultfd: wait: %w: the descriptor lost O_NONBLOCK (set blocking in some process that holds it), "+
			"and the kernel reports POLLERR for a blocking userfaultfd", err)
	}
	return fmt.Errorf("userfaultfd: wait: %w", err)
}

// SetDeadline sets the time after which Wait fails with an error wrapping
// os.ErrDeadlineExceeded; the zero time means none. Poll ignores it.
func (fd *FD) SetDeadline(t time.Time) error {
	fd.pmu.Lock()
	defer fd.pmu.Unlock()
	var d int64
	if !t.IsZero() {
		d = t.UnixNano()
	}
	fd.deadline.Store(d)
	if fd.file == nil {
		return nil
	}
	if err := fd.file.SetReadDeadline(t); err != nil {
		if errors.Is(err, os.ErrClosed) || fd.closing.Load() {
			return ErrClosed
		}
		return fmt.Errorf("userfaultfd: set deadline: %w", err)
	}
	return nil
}
