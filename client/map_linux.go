package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
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
	// OnRecall, if set, is called when the daemon recalls the mapping
	// (before a table change that moves the volume's memory, or its
	// removal): the program must stop using the slice Bytes returned
	// before OnRecall returns, because the library then unmaps it. Access
	// maps it again when next called. A mapping whose Bytes were taken
	// without OnRecall refuses recalls, and the change is refused (busy).
	OnRecall func()
}

// Mapping is a mapped range of a volume.
type Mapping struct {
	c      *Client
	device string
	opts   MapOptions

	// acc is read-held by Access for its function's run, and write-held
	// by a recall while it unmaps: a recall waits for accesses under way.
	acc sync.RWMutex

	mu         sync.Mutex // guards what follows
	id         uint64
	mem        []byte
	sync       bool
	durability string
	// checkpointed: the volume is checkpointed, and Persist asks the
	// daemon for a checkpoint (persist_linux.go).
	checkpointed bool
	recalled     bool // given back to the daemon; Access maps it again
	raw          bool // Bytes was called: the program may hold the slice
	closed       bool
	lost         error // why a new daemon refused to adopt the mapping (Access reports it)

	// What a new daemon needs to adopt the mapping after a restart: the
	// library's own reference to the userfaultfd (so that the range stays
	// protected while no daemon holds one), and what was mapped where.
	ufd    *uffd.FD // nil: not write-protected
	pieces []wire.MapPiece
	files  []wire.FileID
}

// WP features the library asks for: write-protect on shmem and hugetlbfs
// required; layout events so the daemon learns of munmap, mremap, madvise.
const (
	wpRequired = uffd.FeaturePagefaultFlagWP | uffd.FeatureWPHugetlbfsShmem
	wpOptional = uffd.FeatureWPUnpopulated | uffd.FeatureEventUnmap | uffd.FeatureEventRemap | uffd.FeatureEventRemove
)

// Map maps [o.Offset, o.Offset+o.Length) of device. When it returns, any
// write protection the volume's snapshots need is in place and the daemon
// handles write faults. While the device's mappings are being recalled
// for a table change, Map waits (until ctx ends) and asks again.
func (c *Client) Map(ctx context.Context, device string, o MapOptions) (*Mapping, error) {
	m := &Mapping{c: c, device: device, opts: o}
	if err := m.mapWithRetry(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// mapWithRetry maps m, asking again while the daemon says retry or the
// connection is lost (the daemon restarts).
func (m *Mapping) mapWithRetry(ctx context.Context) error {
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		err := m.c.mapOnce(ctx, m)
		if !errors.Is(err, errLost) && !errors.Is(err, ErrRetry) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (still being changed when %v)", err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// mapOnce runs one map exchange for m, which gets a new ID and memory.
func (c *Client) mapOnce(ctx context.Context, m *Mapping) error {
	// The link first, without c.mu: the reconnection that brings it up
	// takes c.mu to hand the mappings over (as persistOnce does). A link
	// that dies meanwhile fails the exchange with errLost: asked again.
	l, err := c.connected(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	o, device := m.opts, m.device
	id := c.nextID.Add(1)
	r, fds, err := c.exchange(ctx, l, wire.SessionMsg{Op: wire.OpMap, ID: id, Map: &wire.MapReq{
		Device: device, Offset: o.Offset, Length: o.Length, Write: o.Write, RequireSync: o.RequireSync}})
	if err != nil {
		return err
	}
	if r.Op != wire.OpGrant || r.Grant == nil {
		closeFDs(fds)
		return refused("map", device, r)
	}
	mem, err := build(r.Grant, fds, o)
	var files []wire.FileID
	if err == nil {
		if files, err = fileIDs(fds); err != nil {
			munmap(mem)
		}
	}
	closeFDs(fds)
	if err != nil {
		c.abandon(ctx, l, id)
		return fmt.Errorf("daxsnap: map %s: %w", device, err)
	}
	armed := wire.SessionMsg{Op: wire.OpArmed, ID: id, Armed: &wire.MapArmed{Addr: uint64(uintptr(unsafe.Pointer(&mem[0]))), Length: o.Length, Keep: true}}
	var ufd *uffd.FD
	if r.Grant.WriteProtect {
		ufd, err = register(mem)
		if err != nil {
			munmap(mem)
			c.abandon(ctx, l, id)
			return fmt.Errorf("daxsnap: map %s: %w", device, err)
		}
		armed.Armed.UFFD = true
	}
	// Known before armed: a recall may come as soon as the daemon has it.
	m.mu.Lock()
	m.id, m.mem, m.sync, m.durability, m.recalled = id, mem, r.Grant.Sync, r.Grant.Durability, false
	m.checkpointed = r.Grant.Checkpointed
	m.ufd, m.pieces, m.files = ufd, r.Grant.Pieces, files
	m.mu.Unlock()
	c.mapsMu.Lock()
	c.maps[id] = m
	c.mapsMu.Unlock()
	var ans wire.SessionMsg
	if ufd != nil {
		// The daemon gets its own copy; the library keeps one, so that the
		// protection outlives the daemon's (see adoptAll).
		cerr := ufd.Control(func(raw int) { ans, fds, err = c.exchange(ctx, l, armed, raw) })
		if err == nil {
			err = cerr
		}
	} else {
		ans, fds, err = c.exchange(ctx, l, armed)
	}
	closeFDs(fds)
	if err == nil && ans.Op != wire.OpReady {
		err = refused("map", device, ans)
	}
	if err != nil {
		c.forget(id)
		m.mu.Lock()
		if m.id == id && !m.recalled {
			unmapGuarded(mem, ufd)
			m.mem, m.ufd = nil, nil
		}
		m.mu.Unlock()
		return err
	}
	return nil
}

// fileIDs says which file each granted descriptor is.
func fileIDs(fds []int) ([]wire.FileID, error) {
	ids := make([]wire.FileID, len(fds))
	for i, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("stat granted descriptor %d: %w", i, err)
		}
		ids[i] = wire.FileID{Dev: st.Dev, Ino: st.Ino}
	}
	return ids, nil
}

// releaseUFFD lets go of the library's reference to the userfaultfd: once
// no daemon holds one either, the kernel lifts the write protection and
// wakes any waiting writer.
func (m *Mapping) releaseUFFD() {
	m.mu.Lock()
	u := m.ufd
	m.ufd = nil
	m.mu.Unlock()
	if u != nil {
		u.Close()
	}
}

// adoptAll hands every live mapping to the daemon on the new connection
// l, with its userfaultfd. c.mu held. A mapping the daemon refuses (its
// device is gone, or maps other memory now) is given up as a recall
// does; an error means the connection failed and must be made again.
func (c *Client) adoptAll(ctx context.Context, l *link) error {
	c.mapsMu.Lock()
	maps := make([]*Mapping, 0, len(c.maps))
	for _, m := range c.maps {
		maps = append(maps, m)
	}
	c.mapsMu.Unlock()
	for _, m := range maps {
		for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
			err := c.adopt(ctx, l, m)
			var e *Error
			if !errors.As(err, &e) {
				if err != nil {
					return err
				}
				break
			}
			if !errors.Is(e, ErrRetry) {
				go m.giveUp(e)
				break
			}
			select { // the device is being changed: ask again
			case <-l.dead:
				return errLost
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
	}
	return nil
}

// adopt asks the daemon on l to take m over; nil if it did, or m is no
// longer mapped; an *Error if it refused.
func (c *Client) adopt(ctx context.Context, l *link, m *Mapping) error {
	m.mu.Lock()
	if m.closed || m.recalled || m.mem == nil {
		m.mu.Unlock()
		return nil
	}
	msg := wire.SessionMsg{Op: wire.OpAdopt, ID: m.id, Adopt: &wire.MapAdopt{
		Map:    wire.MapReq{Device: m.device, Offset: m.opts.Offset, Length: m.opts.Length, Write: m.opts.Write, RequireSync: m.opts.RequireSync},
		Armed:  wire.MapArmed{Addr: uint64(uintptr(unsafe.Pointer(&m.mem[0]))), Length: m.opts.Length, UFFD: m.ufd != nil, Keep: true},
		Pieces: m.pieces, Files: m.files}}
	u := m.ufd
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, adoptTimeout)
	defer cancel()
	var ans wire.SessionMsg
	var fds []int
	var err error
	if u != nil {
		if cerr := u.Control(func(raw int) { ans, fds, err = c.exchange(ctx, l, msg, raw) }); cerr != nil {
			return nil // closed meanwhile: the mapping is gone
		}
	} else {
		ans, fds, err = c.exchange(ctx, l, msg)
	}
	closeFDs(fds)
	if err != nil {
		return err
	}
	if ans.Op != wire.OpReady {
		return refused("adopt", m.device, ans)
	}
	return nil
}

// adoptTimeout bounds one adoption's answer (the daemon protects the
// range first, which a held sweep may delay); past it the connection is
// made again.
const adoptTimeout = time.Minute

// giveUp ends a mapping the new daemon refused to adopt, as a recall
// does: OnRecall, then the range is unmapped and Access maps it again (and
// reports why it cannot). An access under way gets a while to finish; one
// that does not (it may wait on a protected page no daemon will handle)
// loses the range under it, and its next store gets SIGSEGV: a store must
// never land unprotected.
func (m *Mapping) giveUp(why error) {
	if m.opts.OnRecall != nil {
		m.opts.OnRecall()
	}
	locked := false
	for deadline := time.Now().Add(giveUpWait); !locked && time.Now().Before(deadline); {
		if locked = m.acc.TryLock(); !locked {
			time.Sleep(time.Millisecond)
		}
	}
	m.mu.Lock()
	id := m.id
	if !m.closed && !m.recalled {
		unmapGuarded(m.mem, m.ufd)
		m.mem, m.ufd, m.recalled, m.raw = nil, nil, true, false
		m.lost = why
	}
	m.mu.Unlock()
	if locked {
		m.acc.Unlock()
	}
	m.c.forget(id)
}

// giveUpWait is how long giveUp waits for accesses under way.
const giveUpWait = 2 * time.Second

func (c *Client) forget(id uint64) {
	c.mapsMu.Lock()
	delete(c.maps, id)
	c.mapsMu.Unlock()
}

// recall gives the mapping msg names back to the daemon on l: it waits
// for the accesses under way, unmaps, and says so.
func (c *Client) recall(l *link, msg wire.SessionMsg) {
	c.mapsMu.Lock()
	m := c.maps[msg.ID]
	c.mapsMu.Unlock()
	if m == nil {
		l.send(wire.SessionMsg{Op: wire.OpRecalled, ID: msg.ID}) // nothing mapped under that ID
		return
	}
	m.mu.Lock()
	holds := m.raw && m.opts.OnRecall == nil
	m.mu.Unlock()
	if holds {
		l.send(wire.SessionMsg{Op: wire.OpRecallRefused, ID: msg.ID, Error: &wire.ErrorBody{Code: wire.CodeBusy,
			Error: "the program holds the memory through Mapping.Bytes without MapOptions.OnRecall, so the library cannot stop its accesses"}})
		return
	}
	if m.opts.OnRecall != nil {
		m.opts.OnRecall()
	}
	m.acc.Lock()
	m.mu.Lock()
	if m.id == msg.ID && !m.recalled {
		unmapGuarded(m.mem, m.ufd) // the daemon holds its copy until the unmap event
		m.mem, m.ufd, m.recalled, m.raw = nil, nil, true, false
	}
	m.mu.Unlock()
	m.acc.Unlock()
	c.forget(msg.ID)
	l.send(wire.SessionMsg{Op: wire.OpRecalled, ID: msg.ID})
}

// abandon tells the daemon a granted mapping will not be armed.
func (c *Client) abandon(ctx context.Context, l *link, id uint64) {
	if r, fds, err := c.exchange(ctx, l, wire.SessionMsg{Op: wire.OpUnmap, ID: id}); err == nil {
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

// unmapGuarded unmaps mem and lets go of the library's userfaultfd u
// (nil: none), with no moment in which a store could land unprotected:
// the range is made inaccessible first; then u is closed (when no daemon
// holds a copy, the kernel lifts the protection and wakes the waiting
// writers, which fault on the inaccessible range: SIGSEGV); then it is
// unmapped (with no daemon reading the userfaultfd, an unmap event would
// make munmap wait for one).
func unmapGuarded(mem []byte, u *uffd.FD) error {
	if u != nil {
		if len(mem) > 0 {
			unix.Mprotect(mem, unix.PROT_NONE)
		}
		u.Close()
	}
	return munmap(mem)
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

// Bytes returns the mapped memory (nil after Close, or after a recall
// until Access maps it again). A program that keeps the slice must set
// MapOptions.OnRecall, or the mapping refuses recalls; Access is the way
// to use a mapping that may be recalled.
func (m *Mapping) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.raw = true
	return m.mem
}

// Access runs fn with the mapping's memory, mapping it again first if the
// daemon recalled it; a recall waits until fn returns. fn must not keep
// the slice.
func (m *Mapping) Access(ctx context.Context, fn func(mem []byte) error) error {
	for {
		m.acc.RLock()
		m.mu.Lock()
		mem, recalled, closed, lost := m.mem, m.recalled, m.closed, m.lost
		m.mu.Unlock()
		switch {
		case closed:
			m.acc.RUnlock()
			return fmt.Errorf("daxsnap: access %s: mapping is closed", m.device)
		case lost != nil:
			m.acc.RUnlock()
			return fmt.Errorf("daxsnap: access %s: the daemon that started after a restart did not take the mapping over: %w", m.device, lost)
		case !recalled:
			err := fn(mem)
			m.acc.RUnlock()
			return err
		}
		m.acc.RUnlock()
		if err := m.remap(ctx); err != nil {
			return err
		}
	}
}

// remap maps a recalled mapping again.
func (m *Mapping) remap(ctx context.Context) error {
	m.acc.Lock()
	defer m.acc.Unlock()
	m.mu.Lock()
	recalled := m.recalled && !m.closed
	m.mu.Unlock()
	if !recalled {
		return nil
	}
	if err := m.mapWithRetry(ctx); err != nil {
		return fmt.Errorf("daxsnap: map %s again after its recall: %w", m.device, err)
	}
	return nil
}

// Recalled reports whether the daemon has taken the mapping back (Access
// maps it again).
func (m *Mapping) Recalled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recalled
}

// Sync reports whether the mapping is on sync media (MAP_SYNC).
func (m *Mapping) Sync() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sync
}

// Durability says what Persist achieves on this volume.
func (m *Mapping) Durability() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.durability
}

// Persist makes stores to [off, off+n) of the mapping as durable as the
// volume allows: msync(MS_SYNC), which on MAP_SYNC media writes the cache
// lines back and on memory files writes nothing further (memory volumes
// are as durable as their memory: see Durability). On a checkpointed
// volume it then returns once a checkpoint holding every store made to
// the volume before the call is durable on disk; concurrent callers
// share checkpoints. It waits for a restarting daemon; PersistContext
// bounds the wait.
func (m *Mapping) Persist(off, n int) error {
	return m.PersistContext(context.Background(), off, n)
}

// PersistContext is Persist, giving up when ctx ends (the checkpoint it
// asked for goes on).
func (m *Mapping) PersistContext(ctx context.Context, off, n int) error {
	if err := m.msync(off, n); err != nil {
		return err
	}
	m.mu.Lock()
	ck := m.checkpointed
	m.mu.Unlock()
	if !ck {
		return nil
	}
	return m.c.persistGroup(m.device).do(ctx, func(ctx context.Context) error { return m.c.persist(ctx, m) })
}

// msync writes [off, off+n) back as the media needs.
func (m *Mapping) msync(off, n int) error {
	m.acc.RLock()
	defer m.acc.RUnlock()
	m.mu.Lock()
	mem := m.mem
	m.mu.Unlock()
	if mem == nil {
		return fmt.Errorf("daxsnap: persist %s: mapping is closed or recalled", m.device)
	}
	if off < 0 || n < 0 || off > len(mem) || n > len(mem)-off {
		return fmt.Errorf("daxsnap: persist %s: range %d+%d outside the %d-byte mapping", m.device, off, n, len(mem))
	}
	if n == 0 {
		return nil
	}
	ps := os.Getpagesize()
	lo := off &^ (ps - 1)
	if err := unix.Msync(mem[lo:off+n], unix.MS_SYNC); err != nil {
		return fmt.Errorf("daxsnap: persist %s: msync: %w", m.device, err)
	}
	return nil
}

// Close unmaps the range and tells the daemon.
func (m *Mapping) Close() error {
	m.acc.Lock()
	defer m.acc.Unlock()
	m.mu.Lock()
	mem, id, recalled, closed, u := m.mem, m.id, m.recalled, m.closed, m.ufd
	m.mem, m.closed, m.ufd = nil, true, nil
	m.mu.Unlock()
	if closed || recalled {
		return nil // a recalled mapping is the daemon's already
	}
	c := m.c
	c.forget(id)
	err := unmapGuarded(mem, u)
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.current()
	if c.isClosed() || l == nil {
		return err // no daemon has the mapping (the next one is not told of it)
	}
	r, fds, xerr := c.exchange(context.Background(), l, wire.SessionMsg{Op: wire.OpUnmap, ID: id})
	closeFDs(fds)
	if errors.Is(xerr, errLost) {
		xerr = nil // the daemon went with the mapping
	}
	if xerr == nil && r.Op != wire.OpUnmapped {
		xerr = refused("unmap", m.device, r)
	}
	if err != nil {
		return fmt.Errorf("daxsnap: unmap %s: %w", m.device, err)
	}
	return xerr
}
