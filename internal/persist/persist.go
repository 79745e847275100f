// Package persist holds the primitives that make stores to memory-mapped media
// durable: Flush writes CPU cache lines back (for MAP_SYNC mappings of real
// persistent memory, where that is all durability needs) and Msync asks the
// kernel to write a mapping back (for everything else). Nothing else lives
// here.
package persist

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Msync writes back the pages of a shared file mapping that hold b and
// waits for the write-back (msync(MS_SYNC)). b need not be page-aligned: the
// enclosing pages are synced. b must lie inside one mapping.
func Msync(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	page := uintptr(os.Getpagesize())
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := addr &^ (page - 1)
	length := addr + uintptr(len(b)) - start
	_, _, errno := unix.Syscall(unix.SYS_MSYNC, start, length, unix.MS_SYNC)
	runtime.KeepAlive(b)
	if errno != 0 {
		return fmt.Errorf("msync of %d bytes at %#x: %w", len(b), addr, errno)
	}
	return nil
}
