package uffd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FD is a userfaultfd. Its methods are safe for concurrent use; Close waits
// for running operations (a Poll included: Close wakes it) and interrupts a
// blocked Wait.
type FD struct {
	mu     sync.RWMutex // held shared by every operation on raw, exclusively by Close
	closed bool         // under mu
	raw    int          // the descriptor; valid while !closed
	wake   int          // eventfd written by Close to wake Poll

	// file, created by the first Wait with BlockNetpoll, registers raw with
	// the runtime poller and owns it from then on. Not before the
	// handshake: until then the kernel reports POLLERR for a userfaultfd,
	// and the poller would keep that error.
	pmu      sync.Mutex   // guards file's creation and its deadline
	file     *os.File     // nil until needed; Close reads it under mu
	deadline atomic.Int64 // for Wait, in Unix nanoseconds; 0: none

	closing  atomic.Bool
	features atomic.Uint64 // enabled features, once API has run
	userOnly bool
}

// Flags choose how New creates the userfaultfd.
type Flags int

// UserModeOnly asks for a userfaultfd that handles only faults taken in user
// mode (UFFD_USER_MODE_ONLY, Linux 5.11). Any process may create one. With
// it, a system call that writes into a protected page (read(2) into the
// page, for instance) fails with EFAULT instead of waiting for the handler.
const UserModeOnly Flags = 1

const createFlags = unix.O_CLOEXEC | unix.O_NONBLOCK

// New creates a userfaultfd, non-blocking and close-on-exec. Without
// UserModeOnly it asks for one that also handles faults taken in the kernel
// (needs CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1 or access to
// /dev/userfaultfd) and, when that is refused, falls back to a user-mode-only
// one: check UserModeOnly on the result. Call API before anything else.
func New(flags Flags) (*FD, error) {
	if flags&^UserModeOnly != 0 {
		return nil, fmt.Errorf("userfaultfd: unknown flags %#x", int(flags))
	}
	raw, got, err := create(flags)
	if err != nil {
		return nil, err
	}
	return wrap(raw, got)
}

// create tries userfaultfd(2), then /dev/userfaultfd, then (unless the
// caller asked for it anyway) a user-mode-only userfaultfd(2); got is
// want, with UserModeOnly added in that last case.
func create(want Flags) (fd int, got Flags, err error) {
	userOnly := want&UserModeOnly != 0
	flags := createFlags
	if userOnly {
		flags |= userModeOnlyFlag
	}
	fd, sysErr := sysCreate(flags)
	if sysErr == nil {
		return fd, want, nil
	}
	if userOnly && sysErr == unix.EINVAL {
		return -1, 0, fmt.Errorf("userfaultfd: create: UFFD_USER_MODE_ONLY needs Linux 5.11+: %w", sysErr)
	}
	if sysErr != unix.EPERM && sysErr != unix.ENOSYS {
		return -1, 0, fmt.Errorf("userfaultfd: create: userfaultfd(2): %w", sysErr)
	}
	fd, devErr := devCreate(flags)
	if devErr == nil {
		return fd, want, nil
	}
	if !userOnly && sysErr == unix.EPERM {
		fd, err := sysCreate(flags | userModeOnlyFlag)
		if err == nil {
			return fd, want | UserModeOnly, nil
		}
		devErr = fmt.Errorf("%v; userfaultfd(2) with UFFD_USER_MODE_ONLY (Linux 5.11+): %w", devErr, err)
	}
	return -1, 0, fmt.Errorf("userfaultfd: cannot create one: userfaultfd(2): %w; /dev/userfaultfd: %v: "+
		"run as root or with CAP_SYS_PTRACE, set vm.unprivileged_userfaultfd=1, or give this user read-write access to /dev/userfaultfd",
		sysErr, devErr)
}

func sysCreate(flags int) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(flags), 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// devCreate asks /dev/userfaultfd (Linux 6.1) for a userfaultfd: access is
// by file permissions, and vm.unprivileged_userfaultfd does not apply.
func devCreate(flags int) (int, error) {
	dev, err := unix.Open("/dev/userfaultfd", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dev)
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(dev), reqDevNew, uintptr(flags))
	if errno != 0 {
		return -1, fmt.Errorf("USERFAULTFD_IOC_NEW: %w", errno)
	}
	return int(fd), nil
}

func wrap(raw int, flags Flags) (*FD, error) {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(raw)
		return nil, fmt.Errorf("userfaultfd: eventfd: %w", err)
	}
	return &FD{raw: raw, wake: wake, userOnly: flags&UserModeOnly != 0}, nil
}

var errHandshake = errors.New("userfaultfd: do the handshake (API) before reading messages")

// pollFile returns the *os.File through which Wait uses the runtime
// poller, creating it on first use. Nothing may call Fd on it: that would
// clear O_NONBLOCK, shared by every copy of the descriptor, and poll(2) on a
// userfaultfd without O_NONBLOCK reports POLLERR.
func (fd *FD) pollFile() (*os.File, error) {
	fd.mu.RLock()
	defer fd.mu.RUnlock()
	if fd.closed {
		return nil, ErrClosed
	}
	if fd.features.Load() == 0 {
		return nil, errHandshake
	}
	fd.pmu.Lock()
	defer fd.pmu.Unlock()
	if fd.file == nil {
		// raw is non-blocking, so NewFile registers it with the poller.
		f := os.NewFile(uintptr(fd.raw), "userfaultfd")
		if d := fd.deadline.Load(); d != 0 {
			if err := f.SetReadDeadline(time.Unix(0, d)); err != nil {
				return nil, fmt.Errorf("userfaultfd: set deadline: %w", err)
			}
		}
		fd.file = f
	}
	return fd.file, nil
}

// FromFD adopts fd, a userfaultfd received from another process (over a
// unix socket with SCM_RIGHTS): the FD owns it from now on, and closes it
// on error too. Operations on it act on the address space of the process
// that created it: addresses in Register, Protect and fault messages are
// that process's. It reads the enabled features from /proc/self/fdinfo.
func FromFD(fd int) (*FD, error) {
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err == nil && link != "anon_inode:[userfaultfd]" {
		err = fmt.Errorf("descriptor %d is %q, not a userfaultfd", fd, link)
	}
	var feat Feature
	var initialized bool
	if err == nil {
		feat, initialized, err = fdinfoFeatures(fd)
	}
	if err == nil {
		unix.CloseOnExec(fd)
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("userfaultfd: adopt descriptor %d: %w", fd, err)
	}
	u, err := wrap(fd, 0)
	if err != nil {
		return nil, err
	}
	if initialized || feat != 0 {
		u.features.Store(uint64(feat) | featureInitialized)
	}
	return u, nil
}

// FromFile adopts the userfaultfd in f, as FromFD; f is closed.
func FromFile(f *os.File) (*FD, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("userfaultfd: adopt %s: %w", f.Name(), err)
	}
	dup := -1
	cerr := rc.Control(func(fd uintptr) { dup, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	f.Close()
	if cerr != nil || err != nil {
		return nil, fmt.Errorf("userfaultfd: adopt %s: %w", f.Name(), errors.Join(cerr, err))
	}
	return FromFD(dup)
}

// fdinfoFeatures reads the "API:\t<api>:<features>:<ioctls>" line the
// kernel shows for a userfaultfd.
func fdinfoFeatures(fd int) (Feature, bool, error) {
	data, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("API:\t"))
		if !ok {
			continue
		}
		parts := bytes.Split(rest, []byte(":"))
		if len(parts) != 3 {
			break
		}
		v, err := strconv.ParseUint(string(parts[1]), 16, 64)
		if err != nil {
			break
		}
		return Feature(v &^ featureInitialized), v&featureInitialized != 0, nil
	}
	return 0, false, fmt.Errorf("no API line in /proc/self/fdinfo/%d: %q", fd, data)
}

// UserModeOnly reports whether the userfaultfd handles only faults taken in
// user mode (see the UserModeOnly flag). It is false for an adopted
// descriptor: the kernel does not say.
func (fd *FD) UserModeOnly() bool { return fd.userOnly }

// Features returns the features enabled by API (for an adopted descriptor,
// those its creator enabled).
func (fd *FD) Features() Feature {
	return Feature(fd.features.Load() &^ featureInitialized)
}

// Control calls f with the raw descriptor, valid only during the call, to
// pass it to another process (unix.UnixRights) without giving up the FD.
// f must not close it, nor clear its O_NONBLOCK flag.
func (fd *FD) Control(f func(fd int)) error {
	fd.mu.RLock()
	defer fd.mu.RUnlock()
	if fd.closed {
		return ErrClosed
	}
	f(fd.raw)
	return nil
}

// Close closes the descriptor. When it was the last reference to the
// userfaultfd (the creator closed its copy after sending it), the kernel
// unregisters every range, clears the write protection and wakes every
// waiting fault: the faulting threads go on, their writes land unprotected.
func (fd *FD) Close() error {
	if !fd.closing.CompareAndSwap(false, true) {
		return ErrClosed
	}
	one := [8]byte{1}
	unix.Write(fd.wake, one[:]) // wake Poll, which holds mu shared
	fd.mu.Lock()
	fd.closed = true
	fd.mu.Unlock()
	var err error
	if fd.file != nil {
		err = fd.file.Close() // wakes Wait
	} else {
		err = unix.Close(fd.raw)
	}
	unix.Close(fd.wake)
	if err != nil {
		return fmt.Errorf("userfaultfd: close: %w", err)
	}
	return nil
}

func (fd *FD) ioctl(req uintptr, arg unsafe.Pointer) error {
	fd.mu.RLock()
	defer fd.mu.RUnlock()
	if fd.closed {
		return ErrClosed
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd.raw), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// Available returns the features this kernel offers (probed once, on a
// temporary userfaultfd: the handshake cannot be repeated on one).
func Available() (Feature, error) { return available() }

var available = sync.OnceValues(func() (Feature, error) {
	raw, _, err := create(0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(raw)
	a := uffdioAPI{API: uffdAPI}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(raw), reqAPI, uintptr(unsafe.Pointer(&a))); errno != 0 {
		return 0, fmt.Errorf("userfaultfd: UFFDIO_API probe: %w", errno)
	}
	return Feature(a.Features), nil
})

// API performs the UFFDIO_API handshake, once per userfaultfd: it enables
// required, or fails with a *FeatureError naming what is missing, plus
// whatever of optional the kernel offers. It returns the enabled features.
func (fd *FD) API(required, optional Feature) (Feature, error) {
	avail, err := Available()
	if err != nil {
		return 0, err
	}
	if missing := required &^ avail; missing != 0 {
		return 0, &FeatureError{Missing: missing, Available: avail, Kernel: kernelRelease()}
	}
	want := required | optional&avail
	a := uffdioAPI{API: uffdAPI, Features: uint64(want)}
	switch err := fd.ioctl(reqAPI, unsafe.Pointer(&a)); {
	case err == nil:
	case errors.Is(err, unix.EPERM) && want&FeatureEventFork != 0:
		return 0, fmt.Errorf("userfaultfd: UFFDIO_API: EVENT_FORK needs CAP_SYS_PTRACE: %w", err)
	case errors.Is(err, unix.EINVAL) && fd.features.Load() != 0:
		return 0, fmt.Errorf("userfaultfd: UFFDIO_API: the handshake was already done on this userfaultfd (features %v): %w", fd.Features(), err)
	default:
		return 0, fmt.Errorf("userfaultfd: UFFDIO_API with features %v: %w", want, err)
	}
	fd.features.Store(uint64(want) | featureInitialized)
	return want, nil
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
