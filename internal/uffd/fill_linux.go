package uffd

import (
	"errors"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Fill places src at [dst, dst+len(src)), a range registered with
// ModeMissing (UFFDIO_COPY): each page is allocated, filled and mapped in
// one step, so no thread ever sees it half written, and on shmem it
// enters the file's page cache, where every other mapping of the file
// finds it. Pages already present are left as they are and skipped:
// placed counts the bytes Fill put in. dst and len(src) must be multiples
// of page. With wake, threads waiting on missing faults in the range on
// this userfaultfd are woken (those of other userfaultfds never are).
func (fd *FD) Fill(dst uintptr, src []byte, page int, wake bool) (placed int64, err error) {
	mode := uint64(fillModeDontWake)
	if wake {
		mode = 0
	}
	deadline := time.Time{}
	for pos := 0; pos < len(src); {
		c := uffdioCopy{Dst: uint64(dst) + uint64(pos), Src: uint64(uintptr(unsafe.Pointer(&src[pos]))), Len: uint64(len(src) - pos), Mode: mode}
		err := fd.ioctl(reqCopy, unsafe.Pointer(&c))
		runtime.KeepAlive(src)
		switch {
		case err == nil:
			return placed + int64(len(src)-pos), nil
		case c.Copy > 0: // part of it, then a page that was there or a change under way
			placed += c.Copy
			pos += int(c.Copy)
		case errors.Is(err, unix.EEXIST):
			pos += page
		case errors.Is(err, unix.EAGAIN):
			// An unmap or remap of the address space is under way.
			if deadline.IsZero() {
				deadline = time.Now().Add(time.Second)
			} else if time.Now().After(deadline) {
				return placed, rangeError("fill", dst+uintptr(pos), uintptr(len(src)-pos), err, nil)
			}
			time.Sleep(20 * time.Microsecond)
		default:
			return placed, rangeError("fill", dst+uintptr(pos), uintptr(len(src)-pos), err, fillHint)
		}
	}
	return placed, nil
}

// ZeroPage places zeroed pages at [addr, addr+n), a range registered with
// ModeMissing (UFFDIO_ZEROPAGE), and wakes the threads waiting there on
// this userfaultfd. placed is false if the first page was already
// present (then nobody was woken: call Wake).
func (fd *FD) ZeroPage(addr, n uintptr) (placed bool, err error) {
	z := uffdioZeropage{Range: uffdioRange{uint64(addr), uint64(n)}}
	err = fd.ioctl(reqZeropage, unsafe.Pointer(&z))
	switch {
	case err == nil:
		return true, nil
	case z.Zeropage > 0:
		return true, nil // part of it: the rest was there
	case errors.Is(err, unix.EEXIST):
		return false, nil
	}
	return false, rangeError("zero page", addr, n, err, fillHint)
}

func fillHint(errno unix.Errno) string {
	switch errno {
	case unix.ENOENT:
		return "register the range with ModeMissing first, with this userfaultfd"
	case unix.EINVAL:
		return "the range and length must be page-aligned and the range registered with ModeMissing"
	case unix.ENOMEM, unix.ENOSPC:
		return "the memory or the tmpfs is full"
	}
	return ""
}
