package session

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/uffd"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Adoption without the program. A program keeps its userfaultfds across a
// daemon restart, and its library hands each mapping to the next daemon
// (adopt.go). It cannot when the Go runtime has stopped it: a store that
// waits on a protected page inside code the runtime cannot preempt
// (runtime.memmove, an atomic store under -race) holds a garbage
// collection's stop-the-world, and so the library's reconnection too,
// until a daemon resolves the fault (docs/dax.md, "Daemon restarts").
//
// So the server keeps a record of every write-protected mapping, one
// file in Config.Records: the process (pid and start time, against pid
// reuse), the number of its descriptor of the userfaultfd (the library
// says it, wire.MapArmed.ClientFD) and what an adopt request says. A
// server that starts takes each mapping whose process still lives over
// before it accepts sessions: it takes the userfaultfd from the process
// (pidfd_getfd), checks that the process maps the same files at the same
// offsets there (/proc/PID/maps) and that the range is registered with
// that userfaultfd, and installs the mapping as adopt does, in a session
// of its own for the process, with no connection (an orphan). When the
// program's library reconnects and adopts the mapping, the orphan lets it
// go first; when the process ends, the orphan releases its mappings as a
// session that ends does. A mapping's record goes with the mapping
// (unmapped, recalled, its session or process ended), except when the
// server closes: the next one needs it. Records the next server cannot
// use (the process is gone, its descriptor closed) are removed.

// errNoProgram: an orphan session has no connection to send on.
var errNoProgram = errors.New("the program has not reconnected since the daemon restarted")

// record is a mapping's record.
type record struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // the process's start time (field 22 of /proc/PID/stat)
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	// Session names the session that holds the mapping (its ID is
	// unique in it), FD the process's descriptor of the userfaultfd.
	Session uint64        `json:"session"`
	ID      uint64        `json:"id"`
	FD      int           `json:"fd"`
	Adopt   wire.MapAdopt `json:"adopt"`
}

// record writes the record of mapping mp, placed from grant g at armed,
// when it has a userfaultfd the process said the number of.
func (x *session) record(mp *mapping, g *grant, armed *wire.MapArmed) {
	dir := x.srv.cfg.Records
	if dir == "" || mp.uffd == nil || armed.ClientFD <= 0 || x.procStart == 0 || len(g.ids) == 0 {
		return
	}
	r := record{PID: x.pid, Start: x.procStart, UID: x.peer.UID, GID: x.peer.GID, Session: x.token, ID: mp.id, FD: armed.ClientFD,
		Adopt: wire.MapAdopt{Map: g.req, Armed: *armed, Pieces: g.pieces, Files: g.ids}}
	b, err := json.Marshal(r)
	if err == nil {
		path := filepath.Join(dir, fmt.Sprintf("%d-%016x-%d.json", x.pid, x.token, mp.id))
		if err = os.WriteFile(path, b, 0o600); err == nil {
			mp.keepRecord(path)
			return
		}
	}
	x.srv.log.Warn("no record of the mapping: the next daemon cannot adopt it without its program", append(x.log(), "device", g.req.Device, "err", err)...)
}

// keepRecord notes the record file of m; if m was dropped meanwhile, the
// record goes (dropRecord).
func (m *mapping) keepRecord(path string) {
	m.mu.Lock()
	m.record = path
	m.mu.Unlock()
	if m.dropped.Load() { // dropped before it is detached: its detach may have missed the record
		m.dropRecord()
	}
}

// dropRecord removes the record of m, which goes; not while the server
// closes (the mapping stays with its program, and the next server needs
// the record).
func (m *mapping) dropRecord() {
	srv := m.sess.srv
	srv.mu.Lock()
	closed := srv.closed
	srv.mu.Unlock()
	if closed {
		return
	}
	m.mu.Lock()
	path := m.record
	m.record = ""
	m.mu.Unlock()
	if path != "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			srv.log.Warn("cannot remove the record of a mapping gone", "path", path, "err", err)
		}
	}
}

// fileIDs says which file each descriptor is.
func fileIDs(fds []int) ([]wire.FileID, error) {
	ids := make([]wire.FileID, len(fds))
	for i, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("stat the memory file: %w", err)
		}
		ids[i] = wire.FileID{Dev: st.Dev, Ino: st.Ino}
	}
	return ids, nil
}

// procStart reads the start time of process pid (clock ticks after boot,
// field 22 of /proc/PID/stat): a pid reused by another process has
// another.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold anything:
	// the fields after the last ')' start with field 3.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22-2 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[22-3], 10, 64)
}

// end ends session x: its connection closes (serve returns and releases
// its mappings), or, for an orphan, its watch.
func (x *session) end() {
	if x.conn != nil {
		x.conn.Close()
		return
	}
	x.orphan.end()
}

// orphan is what a session made for a process without a connection
// watches: the process (its pidfd) and its end (wake).
type orphan struct {
	pidfd, wake int
	once        sync.Once
}

// end wakes the orphan's watch, which releases the session.
func (o *orphan) end() {
	o.once.Do(func() {
		var one = [8]byte{1}
		unix.Write(o.wake, one[:])
	})
}

// watch waits until the process ends or the orphan is ended, then
// releases the session.
func (x *session) watch() {
	defer x.srv.wg.Done()
	o := x.orphan
	fds := []unix.PollFd{{Fd: int32(o.pidfd), Events: unix.POLLIN}, {Fd: int32(o.wake), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != unix.EINTR {
			break
		}
	}
	if fds[0].Revents != 0 {
		x.srv.log.Info("the process of mappings taken over without it ended: releasing them", x.log()...)
	}
	x.release()
	x.srv.mu.Lock()
	delete(x.srv.sessions, x)
	x.srv.mu.Unlock()
	unix.Close(o.pidfd)
	unix.Close(o.wake)
}

// takeOver ends the hold of an orphan on pid's mapping id adopt a names,
// if one holds it (then it reports true): the program adopts it now.
func (s *Server) takeOver(pid int, id uint64, a *wire.MapAdopt) bool {
	s.mu.Lock()
	var orphans []*session
	for x := range s.sessions {
		if x.orphan != nil && x.pid == pid {
			orphans = append(orphans, x)
		}
	}
	s.mu.Unlock()
	for _, x := range orphans {
		x.mu.Lock()
		mp := x.maps[id]
		x.mu.Unlock()
		if mp == nil || mp.dev.Name() != a.Map.Device || mp.off != a.Map.Offset || mp.n != a.Map.Length || uint64(mp.base()) != a.Armed.Addr {
			continue
		}
		x.forget(id, mp)
		mp.drop()
		s.log.Info("the program took over a mapping held for it", append(x.log(), "device", a.Map.Device, "offset", a.Map.Offset)...)
		return true
	}
	return false
}

// adoptOrphans takes over the mappings of the records in Config.Records
// whose processes live (see above), and removes the other records. It
// runs before the server accepts sessions.
func (s *Server) adoptOrphans() {
	dir := s.cfg.Records
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.log.Warn("no mapping records: mappings cannot be adopted without their programs", "dir", dir, "err", err)
		return
	}
	if err := privateDir(dir); err != nil {
		s.log.Warn("mapping records not trusted, none adopted: programs adopt their mappings when they reconnect", "dir", dir, "err", err)
		return
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		s.log.Warn("cannot read the mapping records", "dir", dir, "err", err)
		return
	}
	type key struct {
		pid     int
		session uint64
	}
	orphans := map[key]*session{}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		var r record
		b, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err == nil {
			k := key{r.PID, r.Session}
			x := orphans[k]
			if x == nil {
				x = &session{srv: s, pid: r.PID, uid: r.UID, started: time.Now(), maps: map[uint64]*mapping{}, token: r.Session,
					procStart: r.Start, peer: access.Peer{PID: r.PID, UID: r.UID, GID: r.GID}}
				orphans[k] = x
			}
			if err = x.adoptRecord(r, path); err == nil {
				continue
			}
		}
		s.log.Info("mapping record not adopted, removed", "record", e.Name(), "err", err)
		os.Remove(path)
	}
	for _, x := range orphans {
		closeWatch := func() {
			if x.orphan != nil {
				unix.Close(x.orphan.pidfd)
				unix.Close(x.orphan.wake)
			}
		}
		if len(x.maps) == 0 { // none of its records adopted
			closeWatch()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			x.release()
			closeWatch()
			continue
		}
		s.sessions[x] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go x.watch()
	}
}

// adoptRecord installs the mapping of record r (in file path) in the
// orphan session x, if r's process lives and still maps it.
func (x *session) adoptRecord(r record, path string) error {
	a := &r.Adopt
	if x.orphan == nil {
		pidfd, err := unix.PidfdOpen(r.PID, 0)
		if err != nil {
			return fmt.Errorf("process %d: %w", r.PID, err)
		}
		o := &orphan{pidfd: pidfd, wake: -1}
		// The start time read once the pidfd holds the process: if the
		// process still lives after the read, it was the pidfd's.
		start, err := procStart(r.PID)
		if err == nil && start != r.Start {
			err = fmt.Errorf("process %d started at %d, the mapping's at %d: the pid was reused", r.PID, start, r.Start)
		}
		if err == nil && exited(pidfd) {
			err = fmt.Errorf("process %d ended", r.PID)
		}
		if err == nil {
			o.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		}
		if err != nil {
			unix.Close(pidfd)
			return err
		}
		x.orphan = o
		x.learnGroups()
	}
	// The record's identity is authorized below without the process: it
	// must be the one the process runs with now.
	if err := sameCredentials(r.PID, r.UID, r.GID); err != nil {
		return err
	}
	if !a.Armed.UFFD || r.FD <= 0 || a.Armed.Length != a.Map.Length || a.Armed.Addr == 0 {
		return errors.New("the record names no userfaultfd or no range")
	}
	if err := mapsPieces(r.PID, a); err != nil {
		return err
	}
	dev, err := x.srv.cfg.Lookup(a.Map.Device)
	if err != nil {
		return err
	}
	if err := x.srv.cfg.Authorize(x.peer, dev, access.Need(a.Map.Write)); err != nil {
		return err
	}
	g, via, files, mem, pfds, err := x.describe(dev, a.Map)
	defer closeAll(pfds)
	if err != nil {
		return err
	}
	if err := samePieces(g, pfds, a); err != nil {
		return err
	}
	if !g.WriteProtect {
		return errors.New("the device's memory is not write-protectable any more")
	}
	fd, err := unix.PidfdGetfd(x.orphan.pidfd, r.FD, 0)
	if err != nil {
		return fmt.Errorf("take descriptor %d of process %d: %w", r.FD, r.PID, err)
	}
	u, err := uffd.FromFD(fd) // closes fd on error: not a userfaultfd
	if err != nil {
		return err
	}
	// Registering a range again with its own userfaultfd, in the same
	// mode, changes nothing; a range registered with another fails
	// (EBUSY): the descriptor is not the mapping's any more.
	if err := u.Register(uintptr(a.Armed.Addr), uintptr(a.Map.Length), uffd.ModeWP); err != nil {
		u.Close()
		return fmt.Errorf("descriptor %d of process %d is not the mapping's userfaultfd: %w", r.FD, r.PID, err)
	}
	gr := &grant{dev: dev, via: via, files: files, mem: mem, req: a.Map, page: g.PageSize, wp: true, pieces: a.Pieces, ids: a.Files}
	armed := a.Armed
	if _, err := x.place(r.ID, gr, &armed, u, orphaned, path); err != nil {
		return err
	}
	x.srv.log.Info("took over a mapping made with an earlier daemon, without its program",
		append(x.log(), "device", a.Map.Device, "offset", a.Map.Offset, "length", a.Map.Length)...)
	return nil
}

// privateDir checks that only this daemon's user may write in dir: a
// record takes a descriptor from a process and maps with its rights, so
// no one else may write one.
func privateDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if me := uint32(os.Geteuid()); st.Uid != me {
		return fmt.Errorf("%s belongs to uid %d, not to this daemon's uid %d: remove it", dir, st.Uid, me)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("others may write in %s (mode %#o): chmod 700 it", dir, st.Mode&0o777)
	}
	return nil
}

// sameCredentials checks that process pid runs with effective user uid
// and group gid (what its session's SO_PEERCRED said), from the Uid: and
// Gid: lines of /proc/PID/status (real, effective, saved, file system).
func sameCredentials(pid int, uid, gid uint32) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return err
	}
	want := map[string]uint32{"Uid:": uid, "Gid:": gid}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		w, ok := want[f[0]]
		if !ok {
			continue
		}
		got, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return fmt.Errorf("/proc/%d/status: %q", pid, line)
		}
		if uint32(got) != w {
			return fmt.Errorf("process %d runs with effective %s %d now, its mapping was granted to %d", pid, strings.ToLower(strings.TrimSuffix(f[0], ":")), got, w)
		}
		delete(want, f[0])
	}
	if len(want) != 0 {
		return fmt.Errorf("/proc/%d/status: no Uid: or Gid: line", pid)
	}
	return nil
}

// exited reports whether the process of pidfd has ended.
func exited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// mapsPieces checks in /proc/PID/maps that the process maps the pieces
// of a, with no gap, where a says: each piece's file at its offset.
func mapsPieces(pid int, a *wire.MapAdopt) error {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return err
	}
	defer f.Close()
	lo, hi := a.Armed.Addr, a.Armed.Addr+uint64(a.Map.Length)
	at := lo // mapped as a says up to here
	sc := bufio.NewScanner(f)
	for sc.Scan() && at < hi {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		var start, end, off uint64
		var major, minor uint32
		if _, err := fmt.Sscanf(fields[0], "%x-%x", &start, &end); err != nil || end <= at || start >= hi {
			continue
		}
		if start > at {
			return fmt.Errorf("process %d maps nothing at %#x", pid, at)
		}
		ino, err := strconv.ParseUint(fields[4], 10, 64)
		if _, err2 := fmt.Sscanf(fields[2]+" "+fields[3], "%x %x:%x", &off, &major, &minor); err != nil || err2 != nil {
			return fmt.Errorf("process %d: maps line %q", pid, sc.Text())
		}
		id := wire.FileID{Dev: unix.Mkdev(major, minor), Ino: ino}
		// Each piece this VMA covers must come from its file at its offset.
		for _, p := range a.Pieces {
			ps, pe := lo+uint64(p.Off), lo+uint64(p.Off+p.Len)
			s, e := max(ps, start, at), min(pe, end)
			if s >= e {
				continue
			}
			want := uint64(p.FileOffset) + (s - ps)
			if p.FD < 0 || p.FD >= len(a.Files) || a.Files[p.FD] != id || off+(s-start) != want {
				return fmt.Errorf("process %d maps [%#x, %#x) from file %v offset %d, the mapping's piece there is file %v offset %d",
					pid, s, e, id, off+(s-start), fileAt(a.Files, p.FD), want)
			}
		}
		at = min(end, hi)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if at < hi {
		return fmt.Errorf("process %d maps nothing at %#x", pid, at)
	}
	return nil
}

// newToken names a session in its mappings' records.
func newToken() uint64 { return rand.Uint64() }
