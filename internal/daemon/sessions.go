package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// SessionSocketName is the DAX session socket (client.Dial) in the state
// directory.
const SessionSocketName = "dax.sock"

// SessionSocketPath is the DAX session socket.
func (d *Daemon) SessionSocketPath() string { return SessionSocketPathIn(d.cfg.RuntimeDir) }

// SessionSocketPathIn is the DAX session socket of a daemon whose runtime
// directory (by default its state directory) is dir.
func SessionSocketPathIn(dir string) string {
	return strings.TrimSuffix(dir, "/") + "/" + SessionSocketName
}

// DAXSessions lists the open DAX sessions and their mappings.
func (d *Daemon) DAXSessions() []session.Info { return d.sessions.list() }

// DAXAudit checks that every write-protected mapping of every session still
// carries the userfaultfd write-protect flag in its process (smaps "uw").
func (d *Daemon) DAXAudit() []session.Problem { return d.sessions.audit() }

// daxSessions serves DAX mapping sessions on <runtime>/dax.sock, and
// recalls their mappings of a device whose memory moves.
type daxSessions struct {
	path          string
	recallTimeout time.Duration
	log           *slog.Logger
	mgr           *dm.Manager
	auth          *authz
	metrics       *ioMetrics
	host          doorHost
	srv           *session.Server // nil until start
	ck            ckHooks         // Persist on checkpointed volumes (checkpoint_persist.go)
}

func newDAXSessions(d *Daemon) *daxSessions {
	return &daxSessions{path: d.SessionSocketPath(), recallTimeout: d.cfg.RecallTimeout, log: d.log,
		mgr: d.mgr, auth: d.authz, metrics: d.metrics, host: d, ck: ckHooks{d}}
}

// start serves DAX mapping sessions on <state>/dax.sock.
func (s *daxSessions) start() error {
	path := s.path
	if len(path) > maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, over the %d a unix socket allows: use a shorter --state (or --runtime-dir) directory", path, len(path), maxSocketPath)
	}
	srv, err := session.Listen(session.Config{Socket: path, Lookup: s.lookupForMap, OnRemove: s.mgr.OnRemove, Log: s.log, Authorize: s.auth.authorizeMap, AuthorizeFile: s.auth.authorizeMapFile,
		Durability: s.ck.mapDurability, Persist: s.ck.persist})
	if err != nil {
		return err
	}
	s.srv = srv
	s.mgr.SetSwapGuard(s.guardMappedMemory)
	// The consistent cut of mapped memory: at every suspend and snapshot
	// activation, whoever runs it (dm/cut.go).
	s.mgr.SetCutter(srv.Cut)
	if s.metrics != nil {
		s.metrics.reg.MustRegister(&sessionCollector{srv: srv})
	}
	s.host.serve("DAX sessions", srv.Serve, nil)
	return nil
}

// lookupForMap finds the device a client asks to map; a stopping daemon
// maps nothing new.
func (s *daxSessions) lookupForMap(name string) (*dm.Device, error) {
	if err := s.host.refuseWhileStopping("map " + name); err != nil {
		return nil, err
	}
	return s.mgr.Get(name)
}

// stopSessions ends every DAX session. Their mappings stay in the clients
// and stay write-protected, because the client library keeps its own
// reference to each userfaultfd: a store to a protected page waits until
// the next daemon adopts the mapping (the library reconnects and hands it
// over). It runs before the devices are suspended, because a fault
// handler waits for a suspended device.
func (s *daxSessions) stop() error {
	if s == nil || s.srv == nil {
		return nil
	}
	if err := s.srv.Close(); err != nil {
		return fmt.Errorf("stop DAX sessions: %w", err)
	}
	return nil
}

// guardMappedMemory runs before a table swap (or forced removal) of dev:
// when the new table puts dev's memory elsewhere (or nowhere), it recalls
// every client mapping of dev and of tables over it (the design's stop
// the world), holding new mappings off until the swap is done. A mapping
// not given back in time refuses the swap as busy, naming its process.
func (s *daxSessions) guardMappedMemory(dev *dm.Device, live, next *dm.Table) (func(), error) {
	if dm.SameMemory(live, next) {
		return func() {}, nil
	}
	return s.recall(dev, fmt.Sprintf("the table of %s changes where its memory is", dev.Name()))
}

// recall recalls the mappings of dev (see guardMappedMemory); with no
// sessions served yet there are none.
func (s *daxSessions) recall(dev *dm.Device, reason string) (func(), error) {
	if s == nil || s.srv == nil {
		return func() {}, nil
	}
	release, err := s.srv.Recall(dev, s.recallTimeout, reason)
	if err != nil {
		busy := errorf(dm.ErrBusy, "%v: the processes must unmap %s (or end) first; nothing was changed", err, dev.Name())
		var re *session.RecallError
		if !errors.As(err, &re) {
			return nil, busy
		}
		// Users, for a merge --deferred to wait for.
		users := make([]devUser, 0, len(re.Failed))
		for _, f := range re.Failed {
			users = append(users, daxUser(f.Device, f.Offset, f.Length, f.PID, ", not given back"))
		}
		return nil, &snapshots.InUseError{Users: devUsers(users), Err: busy}
	}
	return release, nil
}

// list lists the open DAX sessions and their mappings.
func (s *daxSessions) list() []session.Info {
	if s == nil || s.srv == nil {
		return nil
	}
	return s.srv.Sessions()
}

// audit is DAXAudit.
func (s *daxSessions) audit() []session.Problem {
	if s == nil || s.srv == nil {
		return nil
	}
	return s.srv.Audit()
}

// Sessions lists the DAX sessions for the API, with the audit's findings
// attached to the session they concern.
func (d sessionService) Sessions(ctx context.Context) ([]wire.DAXSession, error) {
	problems := map[int][]string{}
	for _, p := range d.DAXAudit() {
		problems[p.PID] = append(problems[p.PID], fmt.Sprintf("mapping %d of %s: %s", p.ID, p.Device, p.Reason))
	}
	out := []wire.DAXSession{}
	for _, s := range d.DAXSessions() {
		ws := wire.DAXSession{PID: s.PID, UID: s.UID, Started: s.Started, Problems: problems[s.PID], Mappings: []wire.DAXMapping{}}
		for _, m := range s.Mappings {
			ws.Mappings = append(ws.Mappings, wire.DAXMapping{Device: m.Device, Offset: m.Offset, Length: m.Length,
				Addr: m.Addr, Write: m.Write, Faults: m.Faults, Held: m.Held, OutlivesDaemon: m.OutlivesDaemon, Adopted: m.Adopted})
		}
		out = append(out, ws)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

// daxSession is a session with n DAX mappings of one device.
type daxSession struct {
	pid int
	uid uint32
	n   int
}

// of lists the sessions that map device name, with how many
// mappings each.
func (ds *daxSessions) of(name string) []daxSession {
	var out []daxSession
	for _, s := range ds.list() {
		n := 0
		for _, m := range s.Mappings {
			if m.Device == name {
				n++
			}
		}
		if n > 0 {
			out = append(out, daxSession{pid: s.PID, uid: s.UID, n: n})
		}
	}
	return out
}
