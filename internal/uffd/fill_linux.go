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

// ZeroPage places a zeroed, write-protected page at addr, in a range
// registered with ModeMissing and ModeWP, and wakes the threads waiting
// there on this userfaultfd: a hole's missing fault is resolved as the
// kernel would, and a write to the page then faults as a first write to a
// protected page does. placed is false if the page was already present
// (then nobody was woken: call Wake).
func (fd *FD) ZeroPage(addr uintptr, page int) (placed bool, err error) {
	zero := make([]byte, page)
	c := uffdioCopy{Dst: uint64(addr), Src: uint64(uintptr(unsafe.Pointer(&zero[0]))), Len: uint64(page), Mode: copyModeWP}
	err = fd.ioctl(reqCopy, unsafe.Pointer(&c))
	runtime.KeepAlive(zero)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		return false, nil
	}
	return false, rangeError("zero page", addr, uintptr(page), err, fillHint)
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
