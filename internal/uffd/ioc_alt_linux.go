//go:build linux && (mips || mipsle || mips64 || mips64le || ppc || ppc64 || ppc64le || sparc64)

package uffd

// The ioctl direction encoding of mips, powerpc and sparc: three direction
// bits from bit 29, a 13-bit size.
const (
	iocNone     = 1
	iocRead     = 2
	iocWrite    = 4
	iocDirShift = 29
)
