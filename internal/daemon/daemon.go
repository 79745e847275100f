package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/target/all"
)

// Daemon is a running daxsnap serve.
type Daemon struct {
	cfg   Config
	log   *slog.Logger
	store *state.Store
	reg   *dm.Registry
	pool  *dm.DevicePool
	mgr   *dm.Manager

	locks   nameLocks
	graphMu sync.Mutex         // loads that may stack on a device vs renames (device_rename.go)
	devs    *devStates         // what the daemon keeps of each device (devstate.go)
	authz   *authz             // who may use a device through NBD, FUSE and DAX maps (nbdauth.go, owners.go)
	regions *pmem.Manager      // the memory regions (pmem.go)
	snaps   *snapshots.Manager // the snapshot verbs, merge jobs and autoextend
	cks     *checkpoints       // checkpointed memory volumes (checkpoints.go)
	metrics *ioMetrics
	// metricsHTTP serves /metrics on --metrics-addr; nil when off.
	metricsHTTP *metricsServer

	api      *api.Server
	exports  *exports       // NBD and FUSE (exports.go, fuse.go); set by listen
	holders  *holders       // who uses a device (holders.go)
	sessions *daxSessions   // DAX mappings on <state>/dax.sock (sessions.go)
	bg       sync.WaitGroup // serving goroutines and state reconciliations
	// ckStarts: the checkpoint engines starting at start (ckRestore.start),
	// which read their devices: shutdown waits for them before it
	// suspends the devices.
	ckStarts sync.WaitGroup
	errs     chan error // a listener that stopped on its own

	stopping     atomic.Bool       // a stop began: nothing new opens (lifecycle.go)
	drained      atomic.Bool       // Drain returned: it logged the users it breaks
	userEvents   userSignal        // a device user let go (holders.go)
	closing      atomic.Bool       // devices are being let go, not removed by a user
	held         map[string]string // at shutdown: devices stacked on a suspended one
	shutdownOnce sync.Once
	shutdownErr  error
}

// Start brings a daemon up: state, devices, control socket, exports.
func Start(cfg Config) (*Daemon, error) {
	cfg = cfg.withDefaults()
	d := &Daemon{cfg: cfg, log: cfg.Logger, errs: make(chan error, 4)}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w: give --state a writable directory", cfg.StateDir, err)
	}
	// Users reach dax.sock and nbd.sock here; the state stays private.
	if err := os.MkdirAll(cfg.RuntimeDir, 0o755); err != nil {
		return nil, fmt.Errorf("create runtime directory %s: %w: give --runtime-dir a writable directory", cfg.RuntimeDir, err)
	}
	store, err := state.OpenOptions(cfg.StateDir, state.Options{LockWait: cfg.LockWait, Recover: cfg.Recover, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	d.store = store
	d.reg = dm.NewRegistry()
	all.Register(d.reg)
	d.regions = pmem.New(pmem.Config{Store: store, Log: cfg.Logger, Dir: cfg.PmemDir, Host: pmemHost{d}})
	d.pool = dm.NewDevicePool(d.regions.Open)
	d.mgr = dm.NewManager(d.reg, d.pool)
	d.devs = newDevStates(d.mgr)
	d.cks = newCheckpoints()
	d.authz = &authz{mgr: d.mgr, devs: d.devs, regions: d.regions}
	snapCfg := cfg.Snapshots
	snapCfg.Dir, snapCfg.COWDir, snapCfg.Logger = cfg.StateDir, cfg.COWDir, cfg.Logger
	if cfg.COWDir == "" {
		// Snapshots of memory origins get their COW on the tmpfs the
		// regions are on, in a directory of this daemon's own.
		snapCfg.MemCOWDir = snapshots.MemCOWDirIn(cfg.PmemDir, cfg.StateDir)
	}
	if d.snaps, err = snapshots.New(snapCfg, d.mgr, store, snapshotHost{d}); err != nil {
		return nil, errors.Join(err, store.Close())
	}
	d.metrics = newIOMetrics(d.mgr, d.snaps.Metrics()...)
	d.metrics.reg.MustRegister(d.snaps.Collector(), ckCollector{d.cks})
	d.mgr.OnRemove(d.removed)
	d.sessions = newDAXSessions(d)
	d.holders = &holders{mgr: d.mgr, devs: d.devs, sessions: d.sessions}
	rs := restorer{log: d.log, store: store, mgr: d.mgr, devs: d.devs, regions: d.regions, snaps: d.snaps, record: d.record, cks: &ckRestore{d: d}}
	if err := rs.restore(); err != nil {
		d.snaps.Stop()
		return nil, errors.Join(err, d.closeDevices(), store.Close())
	}
	d.snaps.ArmAutoextend()
	rs.cks.start() // before the doors open: a restored volume's engine must see every write
	if err := d.listen(); err != nil {
		d.cks.closeAll()
		d.snaps.Stop()
		return nil, errors.Join(err, d.closeDevices(), store.Close())
	}
	d.snaps.WatchDeferredMerges()
	d.log.Info("daxsnap serving", "state", cfg.StateDir, "socket", d.SocketPath(),
		"devices", len(d.mgr.List()), "nbd", addrStrings(d.exports.addrs()), "fuse", d.FUSEDir(), "lost+found", len(d.snaps.LostCOWs()))
	if a := d.MetricsAddr(); a != nil {
		d.log.Info("serving metrics", "addr", a.String(), "url", "http://"+a.String()+"/metrics")
	}
	return d, nil
}

// SocketPath is the control socket.
func (d *Daemon) SocketPath() string { return SocketPathIn(d.cfg.RuntimeDir) }

// SocketPathIn is the control socket of a daemon whose runtime directory
// (by default its state directory) is dir, spelled as the user spelled
// dir ("./daxsnap-state/daxsnap.sock").
func SocketPathIn(dir string) string { return strings.TrimSuffix(dir, "/") + "/" + SocketName }

// addrStrings is addrs as a log shows them ("tcp 127.0.0.1:10809"), not
// as the structs they are.
func addrStrings(addrs []net.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.Network() + " " + a.String()
	}
	return out
}

// StateDir is the state directory.
func (d *Daemon) StateDir() string { return d.cfg.StateDir }

// NBDAddrs lists where devices are exported over NBD ("tcp 127.0.0.1:10809",
// "unix /path/nbd.sock").
func (d *Daemon) NBDAddrs() []net.Addr { return d.exports.addrs() }

// FUSEDir is where the FUSE export is mounted ("" if it is not).
func (d *Daemon) FUSEDir() string { return d.exports.fuseDir() }

// Run serves until stop ends, then stops cleanly: it waits for the
// users of the devices to let go (drain) unless force ends first, then
// shuts down. Breaking users makes it return an error naming them.
func (d *Daemon) Run(stop, force context.Context) error {
	select {
	case <-stop.Done():
	case err := <-d.errs:
		d.log.Error("listener failed, shutting down", "err", err)
	}
	broken := d.drain(force)
	err := d.Shutdown(context.Background())
	if len(broken) > 0 {
		err = errors.Join(fmt.Errorf("stopped by force, breaking %d users of the devices: %s", len(broken), describeUsers(broken)), err)
	}
	return err
}

// Shutdown stops accepting, drains in-flight I/O (suspending every
// device), flushes, closes every device and the state file. Cancelling
// ctx stops waiting for API requests and NBD clients.
func (d *Daemon) Shutdown(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	d.shutdownOnce.Do(func() { d.shutdownErr = d.shutdown(ctx) })
	return d.shutdownErr
}

func (d *Daemon) shutdown(ctx context.Context) error {
	d.log.Info("shutting down: stop accepting")
	d.stopping.Store(true)
	if !d.drained.Load() {
		for _, u := range d.holders.allUsers() {
			d.log.Error("shutting down: this user loses its device", "device", u.device, "user", u.who)
		}
	}
	d.snaps.Stop() // merges resume at the next start
	var errs []error
	apiCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.api.Shutdown(apiCtx); err != nil {
		errs = append(errs, fmt.Errorf("stop control API: %w", err))
	}
	if err := d.exports.shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop NBD exports: %w", err))
	}
	if err := d.metricsHTTP.shutdown(apiCtx); err != nil {
		errs = append(errs, fmt.Errorf("stop metrics server: %w", err))
	}
	errs = append(errs, d.cks.closeAll())
	errs = append(errs, d.exports.stopFUSE())
	errs = append(errs, d.sessions.stop())
	d.ckStarts.Wait()
	errs = append(errs, d.quiesce())
	d.bg.Wait()
	errs = append(errs, d.closeDevices(), d.store.Close())
	os.Remove(d.SocketPath())
	err := errors.Join(errs...)
	if err != nil {
		d.log.Error("shutdown finished with errors", "err", err)
	} else {
		d.log.Info("shutdown complete")
	}
	return err
}
