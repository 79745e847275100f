package backing

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/persist"
	"github.com/daxsnap/daxsnap/internal/rawsys"
)

// memory is a memory region mapped MAP_SHARED into the daemon: a file on
// tmpfs or hugetlbfs, an fsdax file, or a devdax device. Block I/O copies
// from and to the mapping, so it is coherent with every direct mapping.
type memory struct {
	base
	f        *os.File
	fd       int
	mem      []byte // the whole device; unmapped by Close
	pageSize int64
	// reserved: mem is the start of a reservation of cap(mem) bytes of
	// address space (Options.GrowLimit), into which Reprobe maps the
	// file's growth; how is how its pieces are mapped.
	reserved bool
	limit    int64 // Options.GrowLimit when reserved (whole huge pages on hugetlbfs)
	how      mapping
	// sync: stores are durable once their cache lines are written back
	// (MAP_SYNC on persistent media). Writes then write their lines back
	// themselves, and FlushRange needs no system call.
	sync bool
	// hugePages: a tmpfs file the kernel keeps in 2 MiB pages (mounted
	// huge=always or within_size: its st_blksize is 2 MiB), which the
	// daemon's mapping takes in one fault per 2 MiB, not per 4 KiB: a store
	// through it beats pwrite (FileWrites).
	hugePages bool
	// file: a file, whose pages can be allocated (fallocate) and whose
	// mapping msync writes back. A devdax device has neither.
	file bool
}

// newMemoryFile maps a regular file of kind KindTmpfs, KindHugetlbfs or
// KindFSDAX; pageSize is its mapping granularity.
func newMemoryFile(f *os.File, path string, st *unix.Stat_t, kind Kind, pageSize int64, opts Options) (*memory, error) {
	size := st.Size
	if size == 0 {
		return nil, fmt.Errorf("open backing device %s: the %s is empty: size it first with truncate (truncate -s 1G %s)", path, kind, shellArg(path))
	}
	if size%pageSize != 0 && kind == KindHugetlbfs {
		return nil, fmt.Errorf("open backing device %s: size %d is not a multiple of the hugetlbfs page size %d: truncate it to a multiple",
			path, size, pageSize)
	}
	how := mapping{readOnly: opts.ReadOnly, trySync: kind == KindFSDAX}
	limit := opts.GrowLimit
	if kind == KindHugetlbfs && limit > 0 {
		// The file grows in whole huge pages: a limit within the last
		// one would leave the part of it below the limit out.
		limit = roundUp(limit, pageSize)
	}
	reserved := limit > size
	var mem []byte
	var synced bool
	var err error
	if reserved {
		mem, synced, err = mapReserved(int(f.Fd()), size, limit, pageSize, how)
	} else {
		mem, synced, err = mapShared(int(f.Fd()), size, how)
	}
	if err != nil {
		if kind == KindHugetlbfs && errors.Is(err, unix.ENOMEM) {
			err = fmt.Errorf("%w: not enough free huge pages for %d bytes (raise /proc/sys/vm/nr_hugepages)", err, size)
		}
		return nil, fmt.Errorf("open backing device %s: %w", path, err)
	}
	caps := DAX
	if kind == KindTmpfs || kind == KindHugetlbfs {
		caps |= WPFault // userfaultfd write-protect works on shmem and hugetlb
	}
	if synced {
		caps |= Sync
	}
	p := props{path: path, id: idOf(st), kind: kind, size: size, lbs: 512, caps: caps, ro: opts.ReadOnly}
	how.trySync, how.needSync = synced, synced // growth is mapped as the start was
	return &memory{base: base{props: p}, f: f, fd: int(f.Fd()), mem: mem, pageSize: pageSize, sync: synced, file: true,
		hugePages: kind == KindTmpfs && int64(st.Blksize) >= hugePageBytes, reserved: reserved, limit: limit, how: how}, nil
}

// Reprobe takes in a file that grew since it was opened (see Reprober),
// as far as the address space reserved for it reaches (Options.GrowLimit):
// the growth is mapped in place, so the mapping does not move and every
// slice DirectAccess returned stays valid. A device opened without room
// to grow, or a devdax device, keeps its size. On hugetlbfs only whole
// huge pages are taken in.
func (m *memory) Reprobe() error {
	if !m.reserved {
		return nil // no room to grow into (a devdax device never has)
	}
	var st unix.Stat_t
	if err := unix.Fstat(m.fd, &st); err != nil {
		return fmt.Errorf("reprobe %s: fstat: %w", m.path, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("reprobe %s: %w", m.path, ErrClosed)
	}
	size := min(st.Size, m.limit)
	if m.kind == KindHugetlbfs {
		size -= size % m.pageSize
	}
	if size <= m.size {
		return nil
	}
	page := int64(os.Getpagesize())
	from, to := roundUp(m.size, page), roundUp(size, page) // mapped; to map
	if to > from {
		if _, _, err := mmapFile(m.fd, unsafe.Pointer(&m.mem[:cap(m.mem)][from]), from, to-from, m.how); err != nil {
			return fmt.Errorf("reprobe %s: map its growth from %d to %d bytes: %w", m.path, m.size, size, err)
		}
	}
	m.mem, m.size = m.mem[:size], size
	return nil
}

func (m *memory) ReadAt(p []byte, off int64) (int, error) {
	if err := m.enter("read", off, int64(len(p)), reads); err != nil {
		return 0, err
	}
	defer m.mu.RUnlock()
	if err := guarded(func() { copy(p, m.mem[off:]) }); err != nil {
		return 0, m.ioErr("read", off, int64(len(p)), err)
	}
	return len(p), nil
}

func (m *memory) WriteAt(p []byte, off int64) (int, error) {
	if err := m.enter("write", off, int64(len(p)), writes); err != nil {
		return 0, err
	}
	defer m.mu.RUnlock()
	dst := m.mem[off : off+int64(len(p))]
	var err error
	if ferr := guarded(func() { copy(dst, p); err = m.writeBack(dst) }); ferr != nil || err != nil {
		return 0, m.ioErr("write", off, int64(len(p)), errors.Join(ferr, err))
	}
	return len(p), nil
}

// fileIO: the memory can be read and written through its file with pread
// and pwrite (FileReader, FileWriter). Only a tmpfs file can: write(2) is
// refused on hugetlbfs, and sync media need their own write-back.
func (m *memory) fileIO() bool { return m.kind == KindTmpfs && m.file && !m.sync }

// FileWrites reports whether WriteFileAt writes through the file: a tmpfs
// file in small pages. One in huge pages is written through the mapping,
// whose first store into a 2 MiB page maps all of it (see hugePages).
func (m *memory) FileWrites() bool { return m.fileIO() && !m.hugePages }

// WriteFileAt writes p at off with pwrite (see FileWriter), or as
// WriteAt where the memory has no file to write so.
func (m *memory) WriteFileAt(p []byte, off int64) (int, error) {
	if !m.FileWrites() {
		return m.WriteAt(p, off)
	}
	if err := m.enter("write", off, int64(len(p)), writes); err != nil {
		return 0, err
	}
	defer m.mu.RUnlock()
	return m.fileRW("write", rawsys.Pwrite, p, off)
}

// ReadFileAt reads p at off with pread (see FileReader), or as ReadAt
// where the memory has no file to read so. A tmpfs file in huge pages is
// read so too: pread allocates nothing for a hole, where a load through
// the mapping would take in a 2 MiB page.
func (m *memory) ReadFileAt(p []byte, off int64) (int, error) {
	if !m.fileIO() {
		return m.ReadAt(p, off)
	}
	if err := m.enter("read", off, int64(len(p)), reads); err != nil {
		return 0, err
	}
	defer m.mu.RUnlock()
	return m.fileRW("read", rawsys.Pread, p, off)
}

// fileRW moves all of p with rw (pread or pwrite) at off; enter is held.
// rw is a raw system call (package rawsys), which keeps the runtime's
// sysmon asleep: this is the first-write path after a snapshot.
func (m *memory) fileRW(op string, rw func(fd int, p []byte, off int64) (int, syscall.Errno), p []byte, off int64) (int, error) {
	for done := 0; done < len(p); {
		n, errno := rw(m.fd, p[done:], off+int64(done))
		var err error
		switch {
		case errno != 0:
			err = errno
		case n == 0 && op == "read": // within the device
			err = fmt.Errorf("the file ends before the device does (was it truncated under the daemon?): grow it back to the device's size, or remove the device: %w", io.ErrUnexpectedEOF)
		case n == 0:
			err = io.ErrShortWrite
		}
		if err != nil {
			return done, m.ioErr(op, off, int64(len(p)), err)
		}
		done += n
	}
	return len(p), nil
}

// writeBack makes stores to b durable at once on sync media, as the
// kernel's pmem driver does for writes (memcpy_flushcache).
func (m *memory) writeBack(b []byte) error {
	if m.sync {
		return persist.Flush(b)
	}
	return nil
}

// volatile: the memory is RAM with no media behind it (tmpfs, hugetlbfs):
// a completed store is as durable as it will ever be, and msync does
// nothing (the kernel's fsync of both is noop_fsync) but cost a system
// call, which in Go also wakes the runtime's sysmon.
func (m *memory) volatile() bool {
	return m.kind == KindTmpfs || m.kind == KindHugetlbfs
}

// msync is persist.Msync; tests count its calls.
var msync = persist.Msync

// Flush writes the whole mapping back (msync). Sync media need only a
// fence: their writes wrote back their lines already. Volatile memory
// (devdax, tmpfs, hugetlbfs) has nothing to make durable.
func (m *memory) Flush() error {
	if err := m.enter("flush", 0, 0, reads); err != nil {
		return err
	}
	defer m.mu.RUnlock()
	var err error
	switch {
	case m.volatile():
	case m.file:
		err = msync(m.mem)
	case m.sync:
		err = persist.Flush(nil)
	}
	if err != nil {
		return m.ioErr("flush", 0, m.size, err)
	}
	return nil
}

// FlushRange makes stores to [off, off+n), direct ones included, durable:
// cache-line write-back on sync media, msync of the pages of a file that
// is not volatile memory.
func (m *memory) FlushRange(off, n int64) error {
	if err := m.enter("flush", off, n, reads); err != nil {
		return err
	}
	defer m.mu.RUnlock()
	b := m.mem[off : off+n]
	var err error
	switch {
	case m.sync:
		if ferr := guarded(func() { err = persist.Flush(b) }); ferr != nil {
			err = ferr
		}
	case m.volatile():
	case m.file:
		err = msync(b)
	}
	if err != nil {
		return m.ioErr("flush", off, n, err)
	}
	return nil
}

// Discard zeroes the range through the mapping. It does not punch holes:
// a region's memory is reserved when it is made (fallocate), and a page
// given back to tmpfs or the huge page pool could be taken by someone
// else, so that a later store to it fails (SIGBUS, an I/O error) on a
// full file system. A discarded range reads back as zeroes.
func (m *memory) Discard(off, n int64) error { return m.zero("discard", off, n) }

// WriteZeroes zeroes the range through the mapping, keeping its memory
// reserved (see Discard). tmpfs has no FALLOC_FL_ZERO_RANGE, and punching
// a hole and allocating it again would leave a window in which the pages
// can be lost.
func (m *memory) WriteZeroes(off, n int64) error { return m.zero("write zeroes", off, n) }

// zeroStep bounds how much one clear covers, so a store to a hole that
// fails (SIGBUS) is reported near where it happened.
const zeroStep = 1 << 20

func (m *memory) zero(op string, off, n int64) error {
	if err := m.enter(op, off, n, writes); err != nil {
		return err
	}
	defer m.mu.RUnlock()
	for pos := off; pos < off+n; pos += zeroStep {
		b := m.mem[pos:min(pos+zeroStep, off+n)]
		var err error
		if ferr := guarded(func() { clear(b); err = m.writeBack(b) }); ferr != nil || err != nil {
			return m.ioErr(op, pos, int64(len(b)), errors.Join(ferr, err))
		}
	}
	return nil
}

// Populate makes the pages of [off, off+n) present and writable in the
// daemon's mapping (MADV_POPULATE_WRITE, allocating holes), widened to
// whole pages. Kernels before 5.14 lack it: the file's pages are then only
// allocated (fallocate), which saves the allocation, not the fault.
func (m *memory) Populate(off, n int64) error {
	if err := m.enter("populate", off, n, writes); err != nil {
		return err
	}
	defer m.mu.RUnlock()
	lo := off - off%m.pageSize
	hi := min(m.size, (off+n+m.pageSize-1)/m.pageSize*m.pageSize)
	if lo >= hi {
		return nil
	}
	err := unix.Madvise(m.mem[lo:hi], unix.MADV_POPULATE_WRITE)
	if errors.Is(err, unix.EINVAL) && m.file {
		err = unix.Fallocate(m.fd, 0, lo, hi-lo)
	}
	if err != nil {
		return m.ioErr("populate", lo, hi-lo, err)
	}
	return nil
}

// DirectAccess returns the mapped memory of [off, off+n), valid until Close.
// On a read-only device the memory is mapped PROT_READ: a store faults.
func (m *memory) DirectAccess(off, n int64) ([]byte, error) {
	if err := m.enter("direct access", off, n, reads); err != nil {
		return nil, err
	}
	defer m.mu.RUnlock()
	return m.mem[off : off+n : off+n], nil
}

// MapFile returns the descriptor a client maps. After Close it returns an
// invalid descriptor, so a late mmap fails with EBADF instead of mapping
// whatever file reused the number.
func (m *memory) MapFile() (uintptr, int64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ^uintptr(0), 0
	}
	return uintptr(m.fd), 0
}

func (m *memory) PageSize() int64 { return m.pageSize }

func (m *memory) Close() error {
	if err := m.shut(); err != nil {
		return err
	}
	defer m.mu.Unlock()
	err := unmap(m.mem)
	m.mem = nil
	return errors.Join(err, m.f.Close())
}

var (
	_ Device         = (*memory)(nil)
	_ DirectAccesser = (*memory)(nil)
	_ MappingSource  = (*memory)(nil)
	_ Reprober       = (*memory)(nil)
	_ FileReader     = (*memory)(nil)
	_ FileWriter     = (*memory)(nil)
)
