package uffd

import "unsafe"

// The kernel ABI of include/uapi/linux/userfaultfd.h. golang.org/x/sys/unix
// defines only SYS_USERFAULTFD, so the ioctl numbers and structures live here.

const (
	uffdAPI          = 0xAA // UFFD_API: the only API version there is
	uffdioType       = 0xAA // UFFDIO: the ioctl type byte
	userModeOnlyFlag = 1    // UFFD_USER_MODE_ONLY, a userfaultfd(2) flag

	// Ioctl numbers (the nr byte), also bit positions in the ioctl masks
	// that UFFDIO_API and UFFDIO_REGISTER return.
	nrRegister     = 0x00
	nrUnregister   = 0x01
	nrWake         = 0x02
	nrCopy         = 0x03
	nrWriteprotect = 0x06
	nrAPI          = 0x3F

	wpModeProtect  = 1 << 0 // UFFDIO_WRITEPROTECT_MODE_WP
	wpModeDontWake = 1 << 1 // UFFDIO_WRITEPROTECT_MODE_DONTWAKE

	fillModeDontWake = 1 << 0 // UFFDIO_COPY_MODE_DONTWAKE
	copyModeWP       = 1 << 1 // UFFDIO_COPY_MODE_WP

	// featureInitialized is the kernel-internal bit that /proc/PID/fdinfo
	// shows once UFFDIO_API has succeeded (Linux 6.10+); never requested.
	featureInitialized = 1 << 31
)

type uffdioAPI struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

type uffdioRange struct {
	Start uint64
	Len   uint64
}

type uffdioRegister struct {
	Range  uffdioRange
	Mode   uint64
	Ioctls uint64
}

type uffdioWriteprotect struct {
	Range uffdioRange
	Mode  uint64
}

type uffdioCopy struct {
	Dst  uint64
	Src  uint64
	Len  uint64
	Mode uint64
	Copy int64 // bytes copied, or a negative errno
}

// ioc builds an ioctl request number the way the kernel's _IOC macro does,
// with the direction encoding of this architecture (ioc_*_linux.go).
func ioc(dir, nr, size uintptr) uintptr {
	return dir<<iocDirShift | size<<iocSizeShift | uffdioType<<8 | nr
}

var (
	reqAPI          = ioc(iocRead|iocWrite, nrAPI, unsafe.Sizeof(uffdioAPI{}))
	reqRegister     = ioc(iocRead|iocWrite, nrRegister, unsafe.Sizeof(uffdioRegister{}))
	reqUnregister   = ioc(iocRead, nrUnregister, unsafe.Sizeof(uffdioRange{}))
	reqWake         = ioc(iocRead, nrWake, unsafe.Sizeof(uffdioRange{}))
	reqWriteprotect = ioc(iocRead|iocWrite, nrWriteprotect, unsafe.Sizeof(uffdioWriteprotect{}))
	reqCopy         = ioc(iocRead|iocWrite, nrCopy, unsafe.Sizeof(uffdioCopy{}))
	reqDevNew       = ioc(iocNone, 0x00, 0) // USERFAULTFD_IOC_NEW on /dev/userfaultfd
)

const iocSizeShift = 16
