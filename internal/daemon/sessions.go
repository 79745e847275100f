package daemon

import (
	"errors"
	"fmt"
	"sort"
	"strings"

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

// startSessions serves DAX mapping sessions on <state>/dax.sock.
func (d *Daemon) startSessions() error {
	path := d.SessionSocketPath()
	if len(path) > maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, over the %d a unix socket allows: use a shorter --state (or --runtime-dir) directory", path, len(path), maxSocketPath)
	}
	srv, err := session.Listen(session.Config{Socket: path, Lookup: d.lookupForMap, OnRemove: d.mgr.OnRemove, Log: d.log, Authorize: d.authz.authorizeMap, AuthorizeFile: d.authz.authorizeMapFile})
	if err != nil {
		return err
	}
	d.sessions = srv
	d.mgr.SetSwapGuard(d.guardMappedMemory)
	// The consistent cut of mapped memory: at every suspend and snapshot
	// activation, whoever runs it (dm/cut.go).
	d.mgr.SetCutter(srv.Cut)
	if d.metrics != nil {
		d.metrics.reg.MustRegister(&sessionCollector{srv: srv})
	}
	d.serve("DAX sessions", srv.Serve, nil)
	return nil
}

// lookupForMap finds the device a client asks to map; a stopping daemon
// maps nothing new.
func (d *Daemon) lookupForMap(name string) (*dm.Device, error) {
	if err := d.refuseWhileStopping("map " + name); err != nil {
		return nil, err
	}
	return d.mgr.Get(name)
}

// stopSessions ends every DAX session. Their mappings stay in the clients
// and stay write-protected, because the client library keeps its own
// reference to each userfaultfd: a store to a protected page waits until
// the next daemon adopts the mapping (the library reconnects and hands it
// over). It runs before the devices are suspended, because a fault
// handler waits for a suspended device.
func (d *Daemon) stopSessions() error {
	if d.sessions == nil {
		return nil
	}
	if err := d.sessions.Close(); err != nil {
		return fmt.Errorf("stop DAX sessions: %w", err)
	}
	return nil
}

// guardMappedMemory runs before a table swap (or forced removal) of dev:
// when the new table puts dev's memory elsewhere (or nowhere), it recalls
// every client mapping of dev and of tables over it (the design's stop
// the world), holding new mappings off until the swap is done. A mapping
// not given back in time refuses the swap as busy, naming its process.
func (d *Daemon) guardMappedMemory(dev *dm.Device, live, next *dm.Table) (func(), error) {
	if dm.SameMemory(live, next) {
		return func() {}, nil
	}
	return d.recallMappings(dev, fmt.Sprintf("the table of %s changes where its memory is", dev.Name()))
}

// recallMappings recalls the mappings of dev (see guardMappedMemory).
func (d *Daemon) recallMappings(dev *dm.Device, reason string) (func(), error) {
	release, err := d.sessions.Recall(dev, d.cfg.RecallTimeout, reason)
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

// DAXSessions lists the open DAX sessions and their mappings.
func (d *Daemon) DAXSessions() []session.Info {
	if d.sessions == nil {
		return nil
	}
	return d.sessions.Sessions()
}

// DAXAudit checks that every write-protected mapping of every session still
// carries the userfaultfd write-protect flag in its process (smaps "uw").
func (d *Daemon) DAXAudit() []session.Problem {
	if d.sessions == nil {
		return nil
	}
	return d.sessions.Audit()
}

// Sessions lists the DAX sessions for the API, with the audit's findings
// attached to the session they concern.
func (d sessionService) Sessions() ([]wire.DAXSession, error) {
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
