package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// Config configures a Server.
type Config struct {
	// Socket is the path of the unix socket (<state>/dax.sock).
	Socket string
	// Lookup finds a device by name.
	Lookup func(name string) (*dm.Device, error)
	// Log defaults to slog.Default().
	Log *slog.Logger
	// Spin is how long a fault handler polls its userfaultfd after a
	// message before it blocks; 0 means DefaultSpin, negative none.
	Spin time.Duration
	// Authorize decides, for each map request, whether the peer may map
	// dev with the access need asks (access.Read, with access.Write for
	// a writable map); a non-nil error refuses the request
	// with wire.CodePermission and the error's text, which should say
	// who may and what to do. Any user may connect: the check is per
	// request. nil allows root and the daemon's own uid only.
	Authorize func(peer access.Peer, dev *dm.Device, need access.Access) error
	// AuthorizeFile decides, after Authorize, for each file whose
	// descriptor a map request would hand out, whether the peer may have
	// it with the access need asks. A descriptor cannot be limited to the
	// device's range: it reaches the whole file, every other device on
	// it and its size (ftruncate), so the peer needs the right to the
	// whole file. path is the file as the table names it, fd the
	// daemon's descriptor of it. A non-nil error refuses the request as
	// Authorize's does. nil: the file's own owner and mode decide, by
	// the rule of access.Owner.Allows; root and the daemon's uid may
	// have any file.
	AuthorizeFile func(peer access.Peer, dev *dm.Device, path string, fd int, need access.Access) error
	// OnRemove subscribes the server to device removals, as
	// dm.Manager.OnRemove does (Listen subscribes, Close unsubscribes):
	// the server keeps state per device it has seen mapped or recalled,
	// and drops it when the device is removed. Required.
	OnRemove func(func(*dm.Device)) (cancel func())
	// Durability, if set, says whether dev is checkpointed and, if it
	// is, what Persist achieves on it (the grant's Durability text);
	// Persist then asks the daemon (OpPersist), which calls Persist.
	Durability func(dev *dm.Device) (text string, checkpointed bool)
	// Persist returns once every store to dev made before the call is
	// durable (a checkpoint), or once ctx ends (Close ends it, and waits
	// for Persist to return); nil: the daemon does not checkpoint.
	Persist func(ctx context.Context, dev *dm.Device) error
	// Hooks are test knobs; production leaves them zero.
	Hooks Hooks
	// MaxPending bounds the grants one session may hold that its client
	// has not armed yet; further map requests are refused (CodeNoSpace)
	// until it arms or unmaps some. 0 means DefaultMaxPending.
	MaxPending int
}

// Hooks are points where a test pauses the server or breaks it on
// purpose, to show that its checkers catch what the code prevents. Each
// may be nil; all are, outside tests.
type Hooks struct {
	// Sweep runs in a cut after each mapping it write-protected
	// (protected counts them so far), with a reader of the write faults
	// on that mapping resolved since its protection began: un-protected,
	// and noted in the sweep (a count of arrivals would run ahead of the
	// notes). Writers may fault between the pieces of its protection.
	Sweep func(protected int, resolved func() int64)
	// BrokenCut, while it reports true, makes a write fault during a cut
	// resolve at once instead of waiting for the cut's end, and the held
	// phase leave the pages the sweep noted un-protected: the broken cut
	// the consistency checkers must catch.
	BrokenCut func() bool
	// SkipReprotect, while it reports true, makes a cut leave the pages
	// noted during its sweep un-protected (its further rounds and its
	// held phase skip them; faults are still held): a broken second
	// phase the checkers must catch.
	SkipReprotect func() bool
	// Round runs in a cut after each further sweep round (round counts
	// them from 1), once the round protected the noted ranges again,
	// writers running.
	Round func(round int)
	// Hold runs in a cut's held phase, with the faults held and the
	// noted pages protected again, before Cut returns.
	Hold func()
	// Lift runs at a cut's end once its held faults are released, before
	// it lifts the protection of the mappings no cut and no snapshot
	// needs any more.
	Lift func()
	// Unmap runs in a fault handler that saw its client unmap, before it
	// lets the mapping go.
	Unmap func()
}

// DefaultMaxPending is the grants a session may hold unarmed: far more
// than a client maps at once, far less than would cost the daemon
// memory worth mentioning (a grant holds its pieces' description).
const DefaultMaxPending = 1024

// DefaultSpin is the handlers' spin before blocking: long enough to catch
// the next fault of a writer streaming through protected chunks.
const DefaultSpin = 50 * time.Microsecond

// Server accepts sessions and owns their mappings.
type Server struct {
	cfg  Config
	log  *slog.Logger
	ln   *net.UnixListener
	spin time.Duration
	// unsubscribe ends the subscription to device removals (Close).
	unsubscribe func()

	mu       sync.Mutex
	closed   bool
	sessions map[*session]struct{}
	devs     map[*dm.Device]*devState // devices not removed (forgetDevice)
	devSeq   uint64

	// protMu serialises what decides a mapping's protection: a cut's
	// start and end, a new mapping's arming (cut.go).
	protMu sync.Mutex
	cuts   map[*cut]struct{} // cuts under way, under protMu

	wg      sync.WaitGroup // accept loop and sessions
	closing sync.WaitGroup // device closes of dropped mappings
	// closeMu orders closing's Adds before its Wait in Close: once
	// closesWaited is set, a close that starts (a fault handler that
	// outlived dropWait, then saw its client unmap) is not counted.
	closeMu      sync.Mutex
	closesWaited bool

	// stopping ends when Close begins: the Persist requests under way
	// give up (Config.Persist gets it), so that a hung checkpoint does
	// not hold the daemon's stop.
	stopping context.Context
	stop     context.CancelFunc

	stats Stats
}

// Stats are the server's counters since it started.
type Stats struct {
	Sessions, Maps          atomic.Int64 // sessions and mappings ever opened
	Adopted                 atomic.Int64 // of the mappings, those made with an earlier daemon (adopt.go)
	Faults, Held            atomic.Int64 // write faults read; of them, held by a cut
	Repeats                 atomic.Int64 // of them, repeats of a held fault (the writer took a signal), not held again
	Prepared, PreparedBytes atomic.Int64 // copy-before-write steps run, and the bytes they covered
	Sweeps, SweepNanos      atomic.Int64 // cuts that protected mappings (sweeps) and their total protecting time (both phases)
	HeldNanos               atomic.Int64 // total time faults spent held by cuts
	// SweepMaxNanos is the longest cut (both phases, Cut's call to its
	// return). HoldPhaseNanos and HoldPhaseMaxNanos are the total and the
	// longest of cuts' held phases (faults held until Cut returns: the
	// part of a writer's wait the cut itself adds); CutHoldNanos and
	// CutHoldMaxNanos run on to the cut's end (the caller's work
	// included: a snapshot's activation, a suspend's resume).
	SweepMaxNanos, HoldPhaseNanos, HoldPhaseMaxNanos, CutHoldNanos, CutHoldMaxNanos atomic.Int64
	// Reprotected counts the pages cuts protected again because a fault
	// during their sweep un-protected them; Rounds the sweeps' further
	// rounds (a large noted set protected again before holding).
	Reprotected, Rounds atomic.Int64
	// WPCalls counts the UFFDIO_WRITEPROTECT calls of sweeps, re-protection
	// and un-protection (fault resolutions, a cut's end), a large range
	// taking one per 32 MiB (mapping.inPieces).
	WPCalls atomic.Int64
	// Cuts is the number of cuts under way (from Cut to its end: a
	// suspended device's until its resume), each holding the faults of the
	// mappings it covers.
	Cuts                    atomic.Int64
	HandlerErrors, Refusals atomic.Int64
	// Recalls counts mappings recalled (stop the world), RecallFailures
	// those not given back, RecallNanos the time recalls took.
	Recalls, RecallFailures, RecallNanos atomic.Int64

	// FaultLatency counts resolved faults by the handler's time from
	// reading the fault to waking the writer, in FaultBuckets.
	FaultLatency [len(FaultBuckets) + 1]atomic.Int64
	FaultNanos   atomic.Int64 // their sum
}

// FaultBuckets are the upper bounds of Stats.FaultLatency's buckets; the
// last bucket counts the rest.
var FaultBuckets = [...]time.Duration{
	5 * time.Microsecond, 10 * time.Microsecond, 20 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 200 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 5 * time.Millisecond, 50 * time.Millisecond,
}

func (st *Stats) observe(d time.Duration) {
	i := 0
	for i < len(FaultBuckets) && d > FaultBuckets[i] {
		i++
	}
	st.FaultLatency[i].Add(1)
	st.FaultNanos.Add(int64(d))
}

// Live counts the open sessions and their mappings now.
func (s *Server) Live() (sessions, mappings int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for x := range s.sessions {
		x.mu.Lock()
		mappings += len(x.maps)
		x.mu.Unlock()
	}
	return len(s.sessions), mappings
}

// Listen creates the socket (mode 0666: every user may connect,
// Authorize decides who may map what) and returns a server; call Serve.
func Listen(cfg Config) (*Server, error) {
	if cfg.Lookup == nil {
		return nil, errors.New("session: Config.Lookup is required")
	}
	if cfg.OnRemove == nil {
		return nil, errors.New("session: Config.OnRemove is required (the device manager's OnRemove), or the server keeps every removed device's state")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Authorize == nil {
		cfg.Authorize = rootOnly(uint32(os.Geteuid()))
	}
	if cfg.AuthorizeFile == nil {
		cfg.AuthorizeFile = byFileMode(uint32(os.Geteuid()))
	}
	spin := cfg.Spin
	if spin == 0 {
		spin = DefaultSpin
	} else if spin < 0 {
		spin = 0
	}
	if err := os.Remove(cfg.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("session: remove stale socket %s: %w", cfg.Socket, err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: cfg.Socket, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("session: listen on %s: %w", cfg.Socket, err)
	}
	if err := os.Chmod(cfg.Socket, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("session: chmod %s: %w", cfg.Socket, err)
	}
	s := &Server{cfg: cfg, log: cfg.Log.With("component", "session"), ln: ln, spin: spin,
		sessions: map[*session]struct{}{}, devs: map[*dm.Device]*devState{}, cuts: map[*cut]struct{}{}}
	s.stopping, s.stop = context.WithCancel(context.Background())
	s.unsubscribe = cfg.OnRemove(s.forgetDevice)
	return s, nil
}

// Socket returns the socket path.
func (s *Server) Socket() string { return s.cfg.Socket }

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Serve accepts sessions until Close; it returns nil after Close.
func (s *Server) Serve() error {
	// Added under mu, as start does for sessions: Close's Wait must not
	// race an Add (a daemon stopped right after it started).
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("session: accept: %w", err)
		}
		s.start(c)
	}
}

// Close stops accepting, ends every session (releasing its mappings) and
// waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.stop()
	s.unsubscribe()
	sessions := make([]*session, 0, len(s.sessions))
	for x := range s.sessions {
		sessions = append(sessions, x)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, x := range sessions {
		x.conn.Close()
	}
	s.wg.Wait()
	s.closeMu.Lock()
	s.closesWaited = true
	s.closeMu.Unlock()
	s.closing.Wait() // the devices are free for the caller's shutdown
	return err
}

func (s *Server) start(c *net.UnixConn) {
	cred, err := peerCred(c)
	if err != nil {
		s.log.Warn("session refused: no peer credentials", "err", err)
		c.Close()
		return
	}
	x := &session{srv: s, conn: c, pid: int(cred.Pid), uid: cred.Uid, started: time.Now(), maps: map[uint64]*mapping{},
		peer: access.Peer{PID: int(cred.Pid), UID: cred.Uid, GID: cred.Gid}}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.sessions[x] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.stats.Sessions.Add(1)
	go func() {
		defer s.wg.Done()
		x.serve()
		s.mu.Lock()
		delete(s.sessions, x)
		s.mu.Unlock()
	}()
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	return cred, cerr
}

// devState is what the server knows of one device: its mappings in every
// session and the state of a protection sweep.
type devState struct {
	dev *dm.Device
	seq uint64 // creation order: a mapping locks its devices' states in it

	// mu is read-held by each fault resolution (copy-before-write, then
	// un-protect everywhere) and write-held to start or end a hold, so no
	// resolution that began before a cut un-protects after it started.
	mu       sync.RWMutex
	holds    int           // cuts holding the device's faults (cut.go)
	sweeping chan struct{} // non-nil while holds > 0; closed when it drops to 0

	mapsMu sync.Mutex
	maps   map[*mapping]struct{}

	// fence counts recalls under way: new mappings of the device are
	// refused (CodeRetry) while it is not 0. Raised with mapsMu held.
	fence atomic.Int32
}

// devState returns dev's state, or nil if it has none.
func (s *Server) devState(dev *dm.Device) *devState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.devs[dev]
}

// trackDevice returns dev's state, creating it if needed; nil for a
// device that was removed (none is made for it: forgetDevice has run or
// will).
func (s *Server) trackDevice(dev *dm.Device) *devState {
	s.mu.Lock()
	defer s.mu.Unlock()
	ds := s.devs[dev]
	// Removed is set before the removal's forgetDevice takes mu: checked
	// under mu, a state made here is one forgetDevice drops.
	if ds == nil && !dev.Removed() {
		s.devSeq++
		ds = &devState{dev: dev, seq: s.devSeq, maps: map[*mapping]struct{}{}}
		s.devs[dev] = ds
	}
	return ds
}

// forgetDevice drops the state of dev, which was removed (the
// subscriber to dm.Manager.OnRemove). No mapping is left of it: a
// mapping holds its device open, and a device is removed closed.
func (s *Server) forgetDevice(dev *dm.Device) {
	s.mu.Lock()
	delete(s.devs, dev)
	s.mu.Unlock()
}

func (ds *devState) list() []*mapping { return ds.appendList(nil) }

// appendList appends the device's mappings to out: a fault lists them
// into a buffer on its stack, allocating nothing while they fit.
func (ds *devState) appendList(out []*mapping) []*mapping {
	ds.mapsMu.Lock()
	defer ds.mapsMu.Unlock()
	return ds.appendLocked(out)
}

// listLocked is list with mapsMu held.
func (ds *devState) listLocked() []*mapping { return ds.appendLocked(nil) }

func (ds *devState) appendLocked(out []*mapping) []*mapping {
	out = slices.Grow(out, len(ds.maps))
	for m := range ds.maps {
		out = append(out, m)
	}
	return out
}

// liveSessions lists the open sessions.
func (s *Server) liveSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions))
	for x := range s.sessions {
		out = append(out, x)
	}
	return out
}

// Info describes a session.
type Info struct {
	PID      int           `json:"pid"`
	UID      uint32        `json:"uid"`
	Started  time.Time     `json:"started"`
	Mappings []MappingInfo `json:"mappings"`
}

// MappingInfo describes one mapping of a session.
type MappingInfo struct {
	ID     uint64 `json:"id"`
	Device string `json:"device"`
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Addr   uint64 `json:"addr"`
	Write  bool   `json:"write"`
	Faults int64  `json:"faults"`
	Held   int64  `json:"held"`
	// OutlivesDaemon: the client keeps the mapping write-protected when
	// its session ends with the daemon, and hands it to the next daemon
	// (adopt.go): a stopping daemon need not wait for it. Adopted: the
	// mapping was made with an earlier daemon.
	OutlivesDaemon bool `json:"outlives_daemon"`
	Adopted        bool `json:"adopted,omitempty"`
}

// Sessions lists the open sessions.
func (s *Server) Sessions() []Info {
	sessions := s.liveSessions()
	out := make([]Info, 0, len(sessions))
	for _, x := range sessions {
		out = append(out, x.info())
	}
	return out
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, unix.ECONNRESET)
}

// Holder is a live mapping that reaches a device: of the device itself or
// of a table stacked on it (a recall names the ones not given back).
type Holder struct {
	PID            int
	Device         string // the device the client mapped
	Offset, Length int64
}

// maxPending is Config.MaxPending, or its default.
func (s *Server) maxPending() int {
	if s.cfg.MaxPending > 0 {
		return s.cfg.MaxPending
	}
	return DefaultMaxPending
}
