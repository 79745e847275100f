package client

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/uffd"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// MapOptions choose the range and access of a mapping.
type MapOptions struct {
	// Offset and Length in bytes, multiples of the volume's page size
	// (4 KiB; 2 MiB on hugetlbfs). Length 0 is refused.
	Offset, Length int64
	// Write maps read-write; otherwise the mapping is read-only and built
	// from a read-only descriptor: a store to it is SIGSEGV.
	Write bool
	// RequireSync fails the map unless the volume is on sync media
	// (MAP_SYNC: a flushed store is durable), instead of mapping memory
	// whose durability is weaker.
	RequireSync bool
}

// Mapping is a mapped range of a volume.
type Mapping struct {
	c          *Client
	id         uint64
	device     string
	mem        []byte
	sync       bool
	durability string
}

// WP features the library asks for: write-protect on shmem and hugetlbfs
// required; layout events so the daemon learns of munmap, mremap, madvise.
const (
	wpRequired = uffd.FeaturePagefaultFlagWP | uffd.FeatureWPHugetlbfsShmem
	wpOptional = uffd.FeatureWPUnpopulated | uffd.FeatureEventUnmap | uffd.FeatureEventRemap | uffd.FeatureEventRemove
)

// Map maps [o.Offset, o.Offset+o.Length) of device. When it returns, any
// write protection the volume's snapshots need is in place and the daemon
// handles write faults.
func (c *Client) Map(ctx context.Context, device string, o MapOptions) (*Mapping, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	id := c.nextID
	r, fds, err := c.exchange(ctx, wire.SessionMsg{Op: wire.OpMap, ID: id, Map: &wire.MapReq{
		Device: device, Offset: o.Offset, Length: o.Length, Write: o.Write, RequireSync: o.RequireSync}})
	if err != nil {
		return nil, err
	}
	if r.Op != wire.OpGrant || r.Grant == nil {
		closeFDs(fds)
		return nil, refused("map", device, r)
	}
	mem, err := build(r.Grant, fds, o)
	closeFDs(fds)
	if err != nil {
		c.abandon(ctx, id)
		return nil, fmt.Errorf("daxsnap: map %s: %w", device, err)
	}
	m := &Mapping{c: c, id: id, device: device, mem: mem, sync: r.Grant.Sync, durability: r.Grant.Durability}
	armed := wire.SessionMsg{Op: wire.OpArmed, ID: id, Armed: &wire.MapArmed{Addr: uint64(uintptr(unsafe.Pointer(&mem[0]))), Length: o.Length}}
	var ufd *uffd.FD
	if r.Grant.WriteProtect {
		ufd, err = register(mem)
		if err != nil {
			munmap(mem)
			c.abandon(ctx, id)
			return nil, fmt.Errorf("daxsnap: map %s: %w", device, err)
		}
		armed.Armed.UFFD = true
	}
	var ans wire.SessionMsg
	if ufd != nil {
		cerr := ufd.Control(func(raw int) { ans, fds, err = c.exchange(ctx, armed, raw) })
		// The daemon holds its own copy now; ours must go, or a writer
		// would wait forever on a fault after the daemon is gone.
		ufd.Close()
		if err == nil {
			err = cerr
		}
	} else {
		ans, fds, err = c.exchange(ctx, armed)
	}
	closeFDs(fds)
	if err == nil && ans.Op != wire.OpReady {
		err = refused("map", device, ans)
	}
	if err != nil {
		munmap(mem)
		return nil, err
	}
	return m, nil
}

// abandon tells the daemon a granted mapping will not be armed.
func (c *Client) abandon(ctx context.Context, id uint64) {
	if r, fds, err := c.exchange(ctx, wire.SessionMsg{Op: wire.OpUnmap, ID: id}); err == nil {
		closeFDs(fds)
		_ = r
	}
}

// build reserves one address range and maps every piece into it.
func build(g *wire.MapGrant, fds []int, o MapOptions) ([]byte, error) {
	page := max(g.PageSize, int64(os.Getpagesize()))
	if o.Length <= 0 || o.Length%page != 0 {
		return nil, fmt.Errorf("grant: length %d is not a multiple of the page size %d", o.Length, page)
	}
	var pos int64
	for _, p := range g.Pieces {
		if p.Off != pos || p.Len <= 0 || p.FD < 0 || p.FD >= len(fds) || p.Off%page != 0 || p.FileOffset%page != 0 {
			return nil, fmt.Errorf("grant: bad piece %+v (pieces must cover the range in order, page-aligned, with a descriptor)", p)
		}
		pos += p.Len
	}
	if pos != o.Length {
		return nil, fmt.Errorf("grant: pieces cover %d bytes, want %d", pos, o.Length)
	}
	// Reserve Length plus slack for the alignment huge pages need.
	slack := page - int64(os.Getpagesize())
	res, err := mmap(0, uintptr(o.Length+slack), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE, -1, 0)
	if err != nil {
		return nil, fmt.Errorf("reserve %d bytes of address space: %w", o.Length, err)
	}
	base := (res + uintptr(page) - 1) &^ uintptr(page-1)
	if head := base - res; head > 0 {
		unix.Syscall(unix.SYS_MUNMAP, res, head, 0)
	}
	if tail := res + uintptr(o.Length+slack) - (base + uintptr(o.Length)); tail > 0 {
		unix.Syscall(unix.SYS_MUNMAP, base+uintptr(o.Length), tail, 0)
	}
	// The range is outside Go's heap: address arithmetic on it is safe.
	mem := unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(nil), base)), o.Length)
	prot := unix.PROT_READ
	if o.Write {
		prot |= unix.PROT_WRITE
	}
	flags := unix.MAP_SHARED | unix.MAP_FIXED
	if g.Sync {
		flags = unix.MAP_SHARED_VALIDATE | unix.MAP_SYNC | unix.MAP_FIXED
	}
	for _, p := range g.Pieces {
		if _, err := mmap(base+uintptr(p.Off), uintptr(p.Len), prot, flags, fds[p.FD], p.FileOffset); err != nil {
			munmap(mem)
			return nil, fmt.Errorf("map %d bytes at offset %d of the range (file offset %d): %w", p.Len, p.Off, p.FileOffset, err)
		}
	}
	if err := unix.Madvise(mem, unix.MADV_DONTFORK); err != nil {
		munmap(mem)
		return nil, fmt.Errorf("madvise(MADV_DONTFORK): %w", err)
	}
	return mem, nil
}

// munmap unmaps mem (unix.Munmap only takes slices unix.Mmap made).
func munmap(mem []byte) error {
	if len(mem) == 0 {
		return nil
	}
	if _, _, errno := unix.Syscall(unix.SYS_MUNMAP, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), 0); errno != 0 {
		return errno
	}
	return nil
}

func mmap(addr, n uintptr, prot, flags, fd int, off int64) (uintptr, error) {
	r, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, n, uintptr(prot), uintptr(flags), uintptr(fd), uintptr(off))
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// register creates the userfaultfd the daemon will handle, registered over
// mem in write-protect mode.
func register(mem []byte) (*uffd.FD, error) {
	u, err := uffd.New(0)
	if err != nil {
		return nil, fmt.Errorf("create userfaultfd: %w", err)
	}
	if _, err := u.API(wpRequired, wpOptional); err != nil {
		u.Close()
		return nil, fmt.Errorf("userfaultfd handshake: %w", err)
	}
	if err := u.Register(uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uffd.ModeWP); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// Bytes returns the mapped memory (nil after Close).
func (m *Mapping) Bytes() []byte { return m.mem }

// Sync reports whether the mapping is on sync media (MAP_SYNC).
func (m *Mapping) Sync() bool { return m.sync }

// Durability says what Persist achieves on this volume.
func (m *Mapping) Durability() string { return m.durability }

// Persist makes stores to [off, off+n) of the mapping as durable as the
// media allows: msync(MS_SYNC), which on MAP_SYNC media writes the cache
// lines back and on memory files writes nothing further (memory volumes
// are as durable as their memory: see Durability).
func (m *Mapping) Persist(off, n int) error {
	if m.mem == nil {
		return fmt.Errorf("daxsnap: persist %s: mapping is closed", m.device)
	}
	if off < 0 || n < 0 || off > len(m.mem) || n > len(m.mem)-off {
		return fmt.Errorf("daxsnap: persist %s: range %d+%d outside the %d-byte mapping", m.device, off, n, len(m.mem))
	}
	if n == 0 {
		return nil
	}
	ps := os.Getpagesize()
	lo := off &^ (ps - 1)
	if err := unix.Msync(m.mem[lo:off+n], unix.MS_SYNC); err != nil {
		return fmt.Errorf("daxsnap: persist %s: msync: %w", m.device, err)
	}
	return nil
}

// Close unmaps the range and tells the daemon.
func (m *Mapping) Close() error {
	if m.mem == nil {
		return nil
	}
	err := munmap(m.mem)
	m.mem = nil
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return err
	}
	r, fds, xerr := c.exchange(context.Background(), wire.SessionMsg{Op: wire.OpUnmap, ID: m.id})
	closeFDs(fds)
	if xerr == nil && r.Op != wire.OpUnmapped {
		xerr = refused("unmap", m.device, r)
	}
	if err != nil {
		return fmt.Errorf("daxsnap: unmap %s: %w", m.device, err)
	}
	return xerr
}
