package session

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/errcode"
	"github.com/daxsnap/daxsnap/internal/uffd"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// session is one client connection and the mappings it holds.
type session struct {
	srv     *Server
	conn    *net.UnixConn
	pid     int
	uid     uint32
	peer    access.Peer // uid, gid, supplementary groups: what Authorize checks
	started time.Time

	sendMu sync.Mutex // answers and recalls come from different goroutines

	mu      sync.Mutex
	maps    map[uint64]*mapping // armed mappings by ID
	pending map[uint64]*grant   // granted, not armed yet
}

// grant is a mapping the daemon has described but the client has not
// armed yet.
type grant struct {
	dev   *dm.Device
	via   []*dm.Device  // dev and the devices the range was resolved through
	files []backing.ID  // the memory files of the pieces
	mem   []dm.MemRange // the memory of the pieces, for cuts
	req   wire.MapReq
	page  int64
	wp    bool
}

func (x *session) log() []any { return []any{"pid", x.pid, "uid", x.uid} }

// serve reads requests until the connection ends, then releases everything.
func (x *session) serve() {
	defer x.release()
	x.learnGroups()
	buf := make([]byte, wire.MaxSessionPacket)
	for {
		m, fds, err := wire.RecvSession(x.conn, buf)
		if err != nil {
			if !isEOF(err) {
				x.srv.log.Warn("session ends: bad packet", append(x.log(), "err", err)...)
			}
			return
		}
		if err := x.handle(m, fds); err != nil {
			x.srv.log.Warn("session ends", append(x.log(), "err", err)...)
			return
		}
	}
}

func (x *session) send(m wire.SessionMsg, fds ...int) error {
	x.sendMu.Lock()
	defer x.sendMu.Unlock()
	return wire.SendSession(x.conn, m, fds...)
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// handle answers one request; an error ends the session.
func (x *session) handle(m wire.SessionMsg, fds []int) error {
	switch m.Op {
	case wire.OpMap:
		closeAll(fds)
		if m.Map == nil {
			return x.refuse(m.ID, wire.CodeInvalidArgument, errors.New("map request without its map body"))
		}
		return x.grant(m.ID, *m.Map)
	case wire.OpArmed:
		return x.arm(m, fds)
	case wire.OpAdopt:
		return x.adopt(m, fds)
	case wire.OpRecalled, wire.OpRecallRefused:
		closeAll(fds)
		x.mu.Lock()
		mp := x.maps[m.ID]
		x.mu.Unlock()
		if mp == nil || !mp.answerRecall(m) {
			// Usual: the unmap event that the client's munmap raised has
			// already dropped the mapping, which ended its recall.
			x.srv.log.Debug("recall answer for no recall under way", append(x.log(), "op", m.Op, "id", m.ID)...)
		}
		return nil
	case wire.OpPersist:
		closeAll(fds)
		return x.persist(m.ID)
	case wire.OpUnmap:
		closeAll(fds)
		x.mu.Lock()
		mp := x.maps[m.ID]
		delete(x.maps, m.ID)
		delete(x.pending, m.ID)
		x.mu.Unlock()
		if mp != nil {
			mp.drop()
		}
		return x.send(wire.SessionMsg{Op: wire.OpUnmapped, ID: m.ID})
	default:
		closeAll(fds)
		return x.refuse(m.ID, wire.CodeInvalidArgument, fmt.Errorf("unknown operation %q", m.Op))
	}
}

// refuse answers with an error; only a failure to send ends the session.
func (x *session) refuse(id uint64, code string, err error) error {
	x.srv.stats.Refusals.Add(1)
	return x.send(wire.SessionMsg{Op: wire.OpError, ID: id, Error: &wire.ErrorBody{Code: code, Error: err.Error()}})
}

// grant checks a map request and sends the pieces and their descriptors.
func (x *session) grant(id uint64, req wire.MapReq) error {
	dev, err := x.srv.cfg.Lookup(req.Device)
	if err != nil {
		return x.refuse(id, codeOf(err), err)
	}
	if err := x.srv.cfg.Authorize(x.peer, dev, access.Need(req.Write)); err != nil {
		x.srv.log.Info("map refused", append(x.log(), "device", req.Device, "write", req.Write, "err", err)...)
		return x.refuse(id, wire.CodePermission, err)
	}
	g, via, files, mem, fds, err := x.describe(dev, req)
	defer closeAll(fds)
	if err != nil {
		if errors.Is(err, access.ErrPermission) {
			x.srv.log.Info("map refused", append(x.log(), "device", req.Device, "write", req.Write, "err", err)...)
		}
		return x.refuse(id, codeOf(err), err)
	}
	if err := x.srv.fenced(via); err != nil {
		return x.refuse(id, wire.CodeRetry, err)
	}
	x.mu.Lock()
	if x.pending == nil {
		x.pending = map[uint64]*grant{}
	}
	if max := x.srv.maxPending(); len(x.pending) >= max {
		x.mu.Unlock()
		x.srv.log.Info("map refused: too many unarmed grants", append(x.log(), "device", req.Device, "pending", max)...)
		return x.refuse(id, wire.CodeNoSpace, fmt.Errorf("this session already holds %d map grants it has not armed, the limit: arm them (OpArmed) or give them back (OpUnmap) before asking for more", max))
	}
	_, dup := x.maps[id]
	if _, ok := x.pending[id]; ok {
		dup = true
	}
	if !dup {
		x.pending[id] = &grant{dev: dev, via: via, files: files, mem: mem, req: req, page: g.PageSize, wp: g.WriteProtect}
	}
	x.mu.Unlock()
	if dup {
		return x.refuse(id, wire.CodeExists, fmt.Errorf("mapping id %d is already in use in this session", id))
	}
	return x.send(wire.SessionMsg{Op: wire.OpGrant, ID: id, Grant: g}, fds...)
}

// describe resolves the request to pieces, opening one descriptor per file
// with the access the request allows; via lists dev and every device the
// pieces were resolved through, mem the memory of the pieces.
func (x *session) describe(dev *dm.Device, req wire.MapReq) (g *wire.MapGrant, via []*dm.Device, files []backing.ID, mem []dm.MemRange, fds []int, err error) {
	g, fds, err = x.describeExtents(dev, req, &via, &files, &mem)
	return g, via, files, mem, fds, err
}

func (x *session) describeExtents(dev *dm.Device, req wire.MapReq, via *[]*dm.Device, files *[]backing.ID, mem *[]dm.MemRange) (*wire.MapGrant, []int, error) {
	name := dev.Name()
	size := dev.Size()
	switch {
	case req.Length <= 0:
		return nil, nil, fmt.Errorf("%w: map of %d bytes of %s: give a positive length", dm.ErrInvalidArgument, req.Length, name)
	case req.Offset < 0 || req.Offset > size || req.Length > size-req.Offset:
		return nil, nil, fmt.Errorf("%w: map of %d bytes at offset %d: %s has %d bytes", dm.ErrOutOfRange, req.Length, req.Offset, name, size)
	}
	info := dev.Info()
	caps := info.LiveCaps
	if !caps.Has(dm.DAX) {
		return nil, nil, fmt.Errorf("%w: device %s is not DAX-capable (its live table offers %v): only DAX devices can be mapped; use block I/O (NBD, API) instead",
			dm.ErrNotSupported, name, caps)
	}
	if req.Write && info.ReadOnly {
		return nil, nil, fmt.Errorf("%w: device %s is read-only: map it without Write", dm.ErrReadOnly, name)
	}
	exts, err := dev.Extents(req.Offset, req.Length)
	if err != nil {
		return nil, nil, err
	}
	if req.RequireSync && !caps.Has(dm.Sync) {
		return nil, nil, fmt.Errorf("device %s is not sync (MAP_SYNC) capable: its memory is a %v (%s), volatile: "+
			"a flushed store is not durable there; map without RequireSync (Persist is then msync, durable across daemon restarts, not reboots) "+
			"or use a device on fsdax/devdax media (%w)",
			name, exts[0].Kind, exts[0].Path, dm.ErrNotSupported)
	}
	if len(exts) > wire.MaxMapPieces {
		return nil, nil, fmt.Errorf("%w: %d bytes at offset %d of %s lie in %d pieces (striped chunks?), more than the %d one mapping may have: map a smaller range",
			dm.ErrNotSupported, req.Length, req.Offset, name, len(exts), wire.MaxMapPieces)
	}
	var page int64
	for _, e := range exts {
		page = max(page, e.PageSize)
	}
	if req.Offset%page != 0 || req.Length%page != 0 {
		return nil, nil, fmt.Errorf("%w: map of %d bytes at offset %d of %s: offset and length must be multiples of its memory's page size, %d bytes",
			dm.ErrInvalidArgument, req.Length, req.Offset, name, page)
	}
	g := &wire.MapGrant{PageSize: page, Sync: caps.Has(dm.Sync), WriteProtect: req.Write && caps.Has(dm.WPFault)}
	if g.Sync {
		g.Durability = "sync media: Persist writes the range back from the CPU caches"
	} else {
		g.Durability = fmt.Sprintf("volatile memory (%v): Persist is msync; the contents survive a daemon restart, not a reboot", exts[0].Kind)
	}
	g.Durability, g.Checkpointed = x.srv.durabilityOf(dev, g.Durability)
	type fileKey struct{ fd uintptr }
	index := map[fileKey]int{}
	var fds []int
	fail := func(err error) (*wire.MapGrant, []int, error) {
		closeAll(fds)
		return nil, nil, err
	}
	for _, e := range exts {
		fd, base := e.Source.MapFile()
		foff := base + e.SourceOff
		if (e.Off-req.Offset)%page != 0 || foff%page != 0 || e.Len%page != 0 {
			return fail(fmt.Errorf("%w: %s maps %d bytes at %d from %s offset %d, not aligned to the %d-byte pages of the mapping: a striped chunk or linear offset smaller than the page?",
				dm.ErrNotSupported, name, e.Len, e.Off, e.Path, foff, page))
		}
		k := fileKey{fd}
		i, ok := index[k]
		if !ok {
			if len(fds) == wire.MaxMapFiles {
				return fail(fmt.Errorf("%w: the range of %s lies in more than %d files", dm.ErrNotSupported, name, wire.MaxMapFiles))
			}
			// The descriptor reaches the whole file, not only this
			// device's range of it: the peer must be entitled to all of it.
			if err := x.srv.cfg.AuthorizeFile(x.peer, dev, e.Path, int(fd), access.Need(req.Write)); err != nil {
				return fail(err)
			}
			flags := unix.O_RDONLY
			if req.Write {
				flags = unix.O_RDWR
			}
			nfd, err := reopen(int(fd), flags)
			if err != nil {
				return fail(fmt.Errorf("%s: reopen %s: %w", name, e.Path, err))
			}
			i = len(fds)
			fds = append(fds, nfd)
			index[k] = i
		}
		if err := reaches(fds[i], foff+e.Len); err != nil {
			return fail(fmt.Errorf("%s: %s: %w", name, e.Path, err))
		}
		g.Pieces = append(g.Pieces, wire.MapPiece{Off: e.Off - req.Offset, Len: e.Len, FD: i, FileOffset: foff})
		*mem = append(*mem, e.Memory())
		for _, d := range e.Via {
			if !slices.Contains(*via, d) {
				*via = append(*via, d)
			}
		}
		if bd, ok := e.Source.(backing.Device); ok && !slices.Contains(*files, bd.ID()) {
			*files = append(*files, bd.ID())
		}
	}
	if !slices.Contains(*via, dev) {
		*via = append(*via, dev)
	}
	return g, fds, nil
}

// reaches checks that the file of fd still has end bytes: a region
// truncated under its devices (by root, or by a user entitled to the
// whole file) would hand the client a mapping that faults with SIGBUS.
func reaches(fd int, end int64) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size < end {
		return fmt.Errorf("%w: the file is %d bytes, short of the %d this map needs: it was truncated after the device was made; its data there is gone: "+
			"remove the devices on it and recreate the region (daxsnap pmem list shows its size)", dm.ErrOutOfRange, st.Size, end)
	}
	return nil
}

// reopen opens the file behind the daemon's descriptor anew with flags
// (O_RDONLY for a read-only map, so that the client cannot get write
// access from it).
func reopen(fd int, flags int) (int, error) {
	if fd < 0 {
		return -1, errors.New("the device is closed")
	}
	return unix.Open("/proc/self/fd/"+strconv.Itoa(fd), flags|unix.O_CLOEXEC, 0)
}

// arm takes over a mapping the client has built: the userfaultfd, its
// place in the device index and, if the device has snapshots, its
// protection; then says ready.
func (x *session) arm(m wire.SessionMsg, fds []int) error {
	x.mu.Lock()
	g := x.pending[m.ID]
	delete(x.pending, m.ID)
	x.mu.Unlock()
	if g == nil {
		closeAll(fds)
		return x.refuse(m.ID, wire.CodeNotFound, fmt.Errorf("armed mapping id %d was not granted", m.ID))
	}
	return x.install(m.ID, g, m.Armed, fds, armedNow)
}

// arming is how a mapping comes to be installed.
type arming int

const (
	armedNow   arming = iota // granted and armed with this daemon
	adoptedMap               // made with an earlier daemon, adopted by this one
)

// install checks where the client mapped grant g (armed, with the
// userfaultfd in fds), then indexes, protects and handles the mapping and
// says ready. An adopted mapping (made with an earlier daemon) has
// writers the old daemon may have left waiting: they are woken once the
// mapping is handled again, and fault anew where it is protected.
func (x *session) install(id uint64, g *grant, armed *wire.MapArmed, fds []int, how arming) error {
	adopted := how == adoptedMap
	bad := func(code string, err error) error {
		closeAll(fds)
		return x.refuse(id, code, err)
	}
	switch {
	case armed == nil || armed.Addr == 0 || armed.Length != g.req.Length || armed.Addr%uint64(g.page) != 0:
		return bad(wire.CodeInvalidArgument, fmt.Errorf("armed mapping id %d: want the address (aligned to %d) and length %d of the mapping", id, g.page, g.req.Length))
	case g.wp && (!armed.UFFD || len(fds) != 1):
		return bad(wire.CodeInvalidArgument, fmt.Errorf("armed mapping id %d: a write map of %s needs its userfaultfd attached (got %d descriptors)", id, g.req.Device, len(fds)))
	case !g.wp && len(fds) != 0:
		return bad(wire.CodeInvalidArgument, fmt.Errorf("armed mapping id %d: unexpected descriptors", id))
	}
	mp := &mapping{sess: x, id: id, dev: g.dev, off: g.req.Offset, n: g.req.Length, addr: uintptr(armed.Addr),
		write: g.req.Write, page: g.page, files: g.files, mem: g.mem, keep: armed.Keep, adopted: adopted, done: make(chan struct{}), gone: make(chan struct{})}
	if g.wp {
		u, err := uffd.FromFD(fds[0])
		if err != nil {
			return x.refuse(id, wire.CodeInvalidArgument, err)
		}
		mp.uffd = u
	}
	for _, d := range append([]*dm.Device{g.dev}, g.via...) {
		ds := x.srv.trackDevice(d)
		if ds == nil {
			mp.drop()
			return x.refuse(id, wire.CodeNotFound, fmt.Errorf("armed mapping id %d of %s: device %s was removed since the map request", id, g.req.Device, d.Name()))
		}
		if d == g.dev {
			mp.ds = ds
		}
		if !slices.Contains(mp.dss, ds) {
			mp.dss = append(mp.dss, ds)
		}
	}
	slices.SortFunc(mp.dss, func(a, b *devState) int { return cmp.Compare(a.seq, b.seq) })
	if err := g.dev.Open(); err != nil {
		mp.drop()
		return x.refuse(id, codeOf(err), err)
	}
	mp.opened = true
	if err := mp.attach(); err != nil {
		mp.drop()
		return x.refuse(id, codeOf(err), err)
	}
	if adopted && mp.uffd != nil {
		// A fault the old daemon read but never resolved keeps its writer
		// waiting for a wake that would never come: wake every writer in
		// the range; where the page is still protected it faults again,
		// and this daemon's handler resolves it.
		if err := mp.uffd.Wake(mp.base(), uintptr(mp.n)); err != nil && !gone(err) {
			mp.drop()
			return x.refuse(id, wire.CodeInternal, fmt.Errorf("wake the writers of adopted mapping %d of %s: %w", id, g.req.Device, err))
		}
	}
	x.mu.Lock()
	_, dup := x.maps[id]
	if !dup {
		x.maps[id] = mp
	}
	x.mu.Unlock()
	if dup {
		mp.drop()
		return x.refuse(id, wire.CodeExists, fmt.Errorf("mapping id %d is already in use in this session", id))
	}
	x.srv.stats.Maps.Add(1)
	if adopted {
		x.srv.stats.Adopted.Add(1)
	}
	return x.send(wire.SessionMsg{Op: wire.OpReady, ID: id})
}

// forget removes mapping m from the session's list (it was unmapped).
func (x *session) forget(id uint64, m *mapping) {
	x.mu.Lock()
	if x.maps[id] == m {
		delete(x.maps, id)
	}
	x.mu.Unlock()
}

// release drops every mapping of the session and closes its connection.
func (x *session) release() {
	x.conn.Close()
	x.mu.Lock()
	maps := x.maps
	x.maps = map[uint64]*mapping{}
	x.pending = nil
	x.mu.Unlock()
	for _, mp := range maps {
		mp.drop()
	}
}

func (x *session) info() Info {
	in := Info{PID: x.pid, UID: x.uid, Started: x.started}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, mp := range x.maps {
		mp.mu.Lock()
		addr := mp.addr
		mp.mu.Unlock()
		in.Mappings = append(in.Mappings, MappingInfo{ID: mp.id, Device: mp.dev.Name(), Offset: mp.off, Length: mp.n,
			Addr: uint64(addr), Write: mp.write, Faults: mp.faults.Load(), Held: mp.held.Load(), OutlivesDaemon: mp.keep, Adopted: mp.adopted})
	}
	return in
}

// codeOf maps an error to its wire code: a fenced device asks the
// client to retry; every other class has the code the API gives it.
func codeOf(err error) string {
	if errors.Is(err, errFenced) {
		return wire.CodeRetry
	}
	return errcode.Of(err)
}
