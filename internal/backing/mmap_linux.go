package backing

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapping is how mapShared maps.
type mapping struct {
	readOnly bool // PROT_READ only
	// trySync first asks for MAP_SYNC through MAP_SHARED_VALIDATE, so that
	// a file or kernel that cannot honour the flag refuses it (EOPNOTSUPP;
	// EINVAL before Linux 4.15) instead of ignoring it.
	trySync bool
	// needSync refuses a mapping without MAP_SYNC (the growth of a
	// mapping that has it).
	needSync bool
}

// mapShared maps size bytes of fd from offset 0, shared, as how says, and
// reports whether MAP_SYNC was granted.
func mapShared(fd int, size int64, how mapping) (mem []byte, synced bool, err error) {
	if size <= 0 || size > math.MaxInt {
		return nil, false, fmt.Errorf("cannot map %d bytes", size)
	}
	p, synced, err := mmapFile(fd, nil, 0, size, how)
	if err != nil {
		return nil, false, err
	}
	return unsafe.Slice((*byte)(p), size), synced, nil
}

// reserveAlign is the least alignment of a reservation: a huge page, so
// that tmpfs with transparent huge pages can map them whole.
const reserveAlign = hugePageBytes

// hugePageBytes is the size of a transparent huge page (x86-64, arm64 with
// 4 KiB pages).
const hugePageBytes = 2 << 20

// mapReserved maps size bytes of fd from offset 0, shared, as how says, at
// the start of limit bytes of address space reserved for it (PROT_NONE,
// MAP_NORESERVE: no memory is committed), aligned to align. The file can
// then grow into the reservation (memory.Reprobe) without the mapping moving, so
// that slices of it stay valid. The result has length size and capacity
// limit rounded up to align; unmap releases all of it.
func mapReserved(fd int, size, limit, align int64, how mapping) (mem []byte, synced bool, err error) {
	align = max(align, reserveAlign)
	limit = roundUp(limit, align)
	if size <= 0 || limit < size || limit > math.MaxInt-align {
		return nil, false, fmt.Errorf("cannot reserve %d bytes to map %d", limit, size)
	}
	raw, err := unix.MmapPtr(-1, 0, nil, uintptr(limit+align), unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, false, fmt.Errorf("reserve %d bytes of address space: %w", limit, err)
	}
	// Keep the aligned limit bytes; give back the slack either side.
	lead := roundUp(int64(uintptr(raw)), align) - int64(uintptr(raw))
	start := unsafe.Add(raw, lead)
	if lead > 0 {
		unix.MunmapPtr(raw, uintptr(lead))
	}
	if tail := align - lead; tail > 0 {
		unix.MunmapPtr(unsafe.Add(start, limit), uintptr(tail))
	}
	_, synced, err = mmapFile(fd, start, 0, size, how)
	if err != nil {
		unix.MunmapPtr(start, uintptr(limit))
		return nil, false, err
	}
	return unsafe.Slice((*byte)(start), limit)[:size], synced, nil
}

// mmapFile maps n bytes of fd from offset off, shared, as how says: at
// at (MAP_FIXED, over a reservation of the caller's), or where the kernel
// chooses when at is nil.
func mmapFile(fd int, at unsafe.Pointer, off, n int64, how mapping) (p unsafe.Pointer, synced bool, err error) {
	prot := unix.PROT_READ | unix.PROT_WRITE
	if how.readOnly {
		prot = unix.PROT_READ
	}
	fixed := 0
	if at != nil {
		fixed = unix.MAP_FIXED
	}
	if how.trySync {
		p, err = unix.MmapPtr(fd, off, at, uintptr(n), prot, unix.MAP_SHARED_VALIDATE|unix.MAP_SYNC|fixed)
		if err == nil {
			return p, true, nil
		}
		if how.needSync || !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
			return nil, false, fmt.Errorf("mmap MAP_SYNC of %d bytes at offset %d: %w", n, off, err)
		}
	}
	if p, err = unix.MmapPtr(fd, off, at, uintptr(n), prot, unix.MAP_SHARED|fixed); err != nil {
		return nil, false, fmt.Errorf("mmap of %d bytes at offset %d: %w", n, off, err)
	}
	return p, false, nil
}

// unmap unmaps a mapping mapShared or mapReserved made, the whole
// reservation of the latter included.
func unmap(mem []byte) error {
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(mem)), uintptr(cap(mem)))
}

// roundUp rounds n up to a multiple of align (a power of two or not).
func roundUp(n, align int64) int64 { return (n + align - 1) / align * align }
