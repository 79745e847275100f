package backing

import (
	"strings"
)

// Capability is a set of properties a backing device has, probed honestly
// when it is opened and never assumed.
type Capability uint8

const (
	// DAX: the device can hand out direct memory mappings of its contents.
	DAX Capability = 1 << iota
	// Sync: a CPU cache flush makes a store durable (real pmem, MAP_SYNC).
	Sync
	// WPFault: userfaultfd write-protect works on its mappings (tmpfs, hugetlbfs).
	WPFault
)

// Has reports whether every capability in want is in c.
func (c Capability) Has(want Capability) bool { return c&want == want }

// String lists the capabilities as "dax,sync,wpfault", or "none".
func (c Capability) String() string {
	var names []string
	for _, n := range []struct {
		bit  Capability
		name string
	}{{DAX, "dax"}, {Sync, "sync"}, {WPFault, "wpfault"}} {
		if c.Has(n.bit) {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// Kind says what a backing device is; its String is used in messages that
// explain why a device lacks a capability ("/srv/a.img is a regular file").
type Kind uint8

const (
	KindFile      Kind = iota // regular file on a block file system
	KindBlock                 // block device
	KindTmpfs                 // file on tmpfs, mapped shared: volatile memory
	KindHugetlbfs             // file on hugetlbfs, mapped shared: volatile memory
	KindFSDAX                 // file with the DAX attribute on an fsdax file system
	KindDevDAX                // /dev/daxX.Y character device
	KindMapped                // another daxsnap mapped device (/dev/mapper/NAME)
)

func (k Kind) String() string {
	switch k {
	case KindFile:
		return "regular file"
	case KindBlock:
		return "block device"
	case KindTmpfs:
		return "tmpfs file"
	case KindHugetlbfs:
		return "hugetlbfs file"
	case KindFSDAX:
		return "fsdax file"
	case KindDevDAX:
		return "devdax device"
	case KindMapped:
		return "mapped device"
	}
	return "unknown device"
}

// ID identifies the object behind a device independently of the path used
// to open it (st_dev and st_ino of the opened file), like the kernel keys
// origins by block device.
type ID struct {
	Dev, Ino uint64
}

// Device is a backing device: the media under every table. Offsets and
// lengths are in bytes. ReadAt and WriteAt follow io.ReaderAt/io.WriterAt:
// a short transfer returns an error, concurrent calls are allowed (writes
// only on disjoint ranges), and the buffer is never retained.
type Device interface {
	// Path is the path the device was opened with.
	Path() string
	// ID identifies the underlying object (see ID).
	ID() ID
	Kind() Kind
	// Size in bytes. It changes only by Reprober.Reprobe, and only up.
	Size() int64
	// LogicalBlockSize is the smallest addressable unit in bytes (512 for
	// files and memory, the queue's logical block size for block devices).
	LogicalBlockSize() int
	Capabilities() Capability
	ReadOnly() bool

	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes every completed write durable as far as the media allows.
	Flush() error
	// Discard deallocates the range (punch hole, BLKDISCARD); it reads back
	// as zeroes on every device daxsnap opens.
	Discard(off, n int64) error
	// WriteZeroes makes the range read back as zeroes, allocated or not.
	WriteZeroes(off, n int64) error
	Close() error
}

// DirectAccesser is implemented by devices with the DAX capability: memory
// regions mapped MAP_SHARED into the daemon.
type DirectAccesser interface {
	// DirectAccess returns the live memory of [off, off+n). The slice stays
	// valid until the device is closed.
	DirectAccess(off, n int64) ([]byte, error)
	// FlushRange makes stores to [off, off+n) as durable as the media
	// allows: msync for memory files on media, cache-line write-back and
	// a fence for sync media, nothing for volatile memory (tmpfs,
	// hugetlbfs, devdax), which has nothing behind it to write back to.
	FlushRange(off, n int64) error
}

// Reprober is implemented by devices that can grow while open: a regular
// file (truncate), a block device (lvextend, a loop device resized), or a
// memory file opened with room to grow (Options.GrowLimit).
// Reprobe reads the size again and takes in any growth; a device never
// shrinks while open, so every range a table was built on stays in range.
type Reprober interface {
	Reprobe() error
}

// Populater is implemented by memory devices that can make a range's pages
// present in the daemon's mapping ahead of use, so the daemon's own stores
// there take no page fault (1–3 µs per 4 KiB page of tmpfs, more for a
// hole that needs a new page). It changes no data.
type Populater interface {
	Populate(off, n int64) error
}

// FileWriter is implemented by memory files whose pages write(2) can fill:
// tmpfs files. The first store into a page of the daemon's mapping costs
// a page fault, and on a VM with shadow page tables a trap to the
// hypervisor on top (8-20 µs per 4 KiB page on the development VM, even
// for a page Populate made present), where the kernel's write copies
// through its own mapping (2-3 µs). Memory written once and not read
// back soon, a fresh COW chunk above all, is best written this way.
// WriteFileAt is WriteAt through the file: the mapping sees the bytes at
// once (the same page cache pages). Memory that write(2) cannot fill
// (hugetlbfs, sync media, devdax) is written as WriteAt does, and so is a
// tmpfs file in 2 MiB pages, whose first store maps a whole huge page with
// one fault (0.7 against 4.2 µs per 4 KiB copied out and overwritten, on
// the development VM): see FileWrites.
type FileWriter interface {
	WriteFileAt(p []byte, off int64) (int, error)
}

// FileReader is FileWriter's reading half: ReadFileAt is ReadAt through
// the file (pread on tmpfs, else as ReadAt), for memory read once that
// the daemon's mapping has likely not touched, such as an origin chunk a
// first write copies out: the first load from a page of the mapping
// costs what a first store does (8-16 µs on the development VM), where
// pread costs 2-4 µs and maps nothing. It reads the same page cache
// pages as the mapping, so it sees every store made through any mapping.
type FileReader interface {
	ReadFileAt(p []byte, off int64) (int, error)
}

// FileWrites reports whether dev's WriteFileAt writes through its file
// (pwrite): a tmpfs file in small pages. Elsewhere it is WriteAt.
func FileWrites(dev Device) bool {
	f, ok := dev.(interface{ FileWrites() bool })
	return ok && f.FileWrites()
}

// ReadFileAt reads dev through its file where it is a FileReader, else
// with ReadAt.
func ReadFileAt(dev Device, p []byte, off int64) (int, error) {
	if fr, ok := dev.(FileReader); ok {
		return fr.ReadFileAt(p, off)
	}
	return dev.ReadAt(p, off)
}

// WriteFileAt writes dev through its file where it is a FileWriter, else
// with WriteAt.
func WriteFileAt(dev Device, p []byte, off int64) (int, error) {
	if fw, ok := dev.(FileWriter); ok {
		return fw.WriteFileAt(p, off)
	}
	return dev.WriteAt(p, off)
}

// MappingSource is implemented by memory devices whose contents a client
// process can map itself: the file to pass and where the range starts in it.
type MappingSource interface {
	// MapFile returns the open file backing the device and the file offset
	// of device offset 0. The caller must not close it.
	MapFile() (fd uintptr, fileOffset int64)
	// PageSize is the mapping granularity (4 KiB, or 2 MiB on hugetlbfs).
	PageSize() int64
}
