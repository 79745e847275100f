package session

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// adopt takes over a mapping an earlier daemon granted (the client
// reconnected after a restart). The client kept its userfaultfd, so the
// range stayed write-protected where the old daemon had left it
// protected. The device must still put the same memory there (same
// files, same offsets); then the mapping is installed as a new one would
// be: protected whole while some snapshot still copies out (a fault on a
// chunk every snapshot already holds copies nothing and un-protects it),
// and the writers the old daemon left waiting are woken.
func (x *session) adopt(m wire.SessionMsg, fds []int) error {
	bad := func(code string, err error) error {
		closeAll(fds)
		return x.refuse(m.ID, code, err)
	}
	a := m.Adopt
	if a == nil {
		return bad(wire.CodeInvalidArgument, errors.New("adopt request without its adopt body"))
	}
	x.mu.Lock()
	_, dup := x.maps[m.ID]
	if _, ok := x.pending[m.ID]; ok {
		dup = true
	}
	x.mu.Unlock()
	if dup {
		return bad(wire.CodeExists, fmt.Errorf("mapping id %d is already in use in this session", m.ID))
	}
	dev, err := x.srv.cfg.Lookup(a.Map.Device)
	if err != nil {
		return bad(codeOf(err), fmt.Errorf("adopt a mapping made with an earlier daemon: %w", err))
	}
	if err := x.srv.cfg.Authorize(x.peer, dev, access.Need(a.Map.Write)); err != nil {
		x.srv.log.Info("adoption refused", append(x.log(), "device", a.Map.Device, "write", a.Map.Write, "err", err)...)
		return bad(wire.CodePermission, err)
	}
	g, via, files, mem, pfds, err := x.describe(dev, a.Map)
	defer closeAll(pfds)
	if err != nil {
		return bad(codeOf(err), fmt.Errorf("adopt a mapping made with an earlier daemon: %w", err))
	}
	if err := samePieces(g, pfds, a); err != nil {
		return bad(wire.CodeNotSupported, fmt.Errorf("cannot adopt mapping %d of %s made with an earlier daemon: %w", m.ID, a.Map.Device, err))
	}
	if err := x.srv.fenced(via); err != nil {
		return bad(wire.CodeRetry, err)
	}
	gr := &grant{dev: dev, via: via, files: files, mem: mem, req: a.Map, page: g.PageSize, wp: g.WriteProtect}
	armed := a.Armed
	if err := x.install(m.ID, gr, &armed, fds, adoptedMap); err != nil {
		return err
	}
	x.srv.log.Info("adopted a mapping made with an earlier daemon",
		append(x.log(), "device", a.Map.Device, "offset", a.Map.Offset, "length", a.Map.Length, "write", a.Map.Write)...)
	return nil
}

// samePieces checks that the client mapped what grant g describes now:
// the same pieces, each from the same file at the same offset.
func samePieces(g *wire.MapGrant, fds []int, a *wire.MapAdopt) error {
	if len(a.Pieces) != len(g.Pieces) {
		return fmt.Errorf("the device's table puts the range in %d pieces now, the client mapped %d: its memory moved", len(g.Pieces), len(a.Pieces))
	}
	ids := make([]wire.FileID, len(fds))
	for i, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("stat the memory file: %w", err)
		}
		ids[i] = wire.FileID{Dev: st.Dev, Ino: st.Ino}
	}
	for i, p := range g.Pieces {
		q := a.Pieces[i]
		if q.Off != p.Off || q.Len != p.Len || q.FileOffset != p.FileOffset || q.FD < 0 || q.FD >= len(a.Files) || a.Files[q.FD] != ids[p.FD] {
			return fmt.Errorf("piece %d (bytes %d+%d of the mapping) is now at offset %d of file %v, the client mapped offset %d of %+v: its memory moved",
				i, p.Off, p.Len, p.FileOffset, ids[p.FD], q.FileOffset, fileAt(a.Files, q.FD))
		}
	}
	return nil
}

func fileAt(files []wire.FileID, i int) any {
	if i < 0 || i >= len(files) {
		return "no file"
	}
	return files[i]
}
