package snapshots

import (
	"log/slog"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is a snapshot manager's policy and test knobs.
type Config struct {
	// Dir is the state directory: COW files the manager creates go in
	// Dir/cow (COWSubdir), the ones it cannot account for in
	// Dir/lost+found (LostFoundDir), unless COWDir says where instead
	// (serve --cow-dir): COWDir and COWDir/lost+found.
	Dir, COWDir string
	// MemCOWDir, if set and COWDir is not, is where the COWs of snapshots
	// of memory origins go (on tmpfs: MemCOWDirIn), with its own
	// lost+found; one daemon per directory (memcow.go).
	MemCOWDir string
	Logger    *slog.Logger
	// AutoextendThreshold and AutoextendPercent are every snapshot's
	// autoextend policy unless its own says otherwise (serve
	// --autoextend-threshold, lvm.conf's snapshot_autoextend_threshold):
	// 0 or 100 is off; otherwise 50 to 99, and Percent defaults to 20.
	AutoextendThreshold int
	AutoextendPercent   int
	// FailStep, if set (tests), is asked before each step of the snapshot
	// verbs ("create-real", "load-origin", "start-merge", ...): an error
	// fails that step, as a crash or an I/O error there would.
	FailStep func(step string) error
}

// Host is what the manager needs of the daemon it runs in: the device
// transitions and records, the name locks, who uses a device, the recall
// of DAX mappings, and the daemon's notes on a device. The manager holds
// no per-device state of the daemon's.
type Host interface {
	// Record is dev's state record as the daemon keeps it, read back
	// from dm; nil if dev is gone.
	Record(dev *dm.Device) *state.Device
	// CreateDevice creates a device (its table loaded and resumed) as a
	// state transition. The caller holds the locks of Lock and LockTables.
	CreateDevice(name string, opts dm.CreateOptions) (*dm.Device, error)
	// RemoveDevice removes dev with opts as a state transition, and drops
	// what the daemon keeps of it once it is gone. Its tables are released
	// when the caller calls release (once, error or not; see
	// dm.Manager.RemoveLater).
	RemoveDevice(dev *dm.Device, opts dm.RemoveOptions) (release func() error, err error)
	// Lock takes the name locks of names; LockTables, taken after them,
	// the locks a table load takes, in the daemon's lock order.
	Lock(names ...string) (unlock func())
	LockTables() (unlock func())
	// Users lists the devices whose tables map name.
	Users(name string) []string
	// Holders lists the users that hold dev, or a device stacked on it,
	// open (DAX mappings among them with OpenersAndMaps): a merge refuses
	// to rewrite a device under them.
	Holders(dev *dm.Device, which HolderKinds) Users
	// Recall takes back the DAX mappings of dev (reason says why); new
	// ones wait until release. A refusal because of mappings not given
	// back is an *InUseError.
	Recall(dev *dm.Device, reason string) (release func(), err error)
	// UserEvents is closed when a user of a device lets go.
	UserEvents() <-chan struct{}
	// RefuseWhileStopping refuses op while the daemon stops.
	RefuseWhileStopping(op string) error
	// Note is what the daemon notes on device name.
	Note(name string) Note
	// SetMergeDeferred and SetInterrupted change the daemon's note on
	// device name: a merge of it is deferred; an operation the last
	// daemon stopped in could not be finished (why says so).
	SetMergeDeferred(name string, on bool)
	SetInterrupted(name, why string)
	// CheckpointImage is the image dev is checkpointed to, or "" if it
	// is not checkpointed: a merge into it is refused (see startMerge).
	CheckpointImage(dev *dm.Device) string
}

// Note is what the daemon notes on a device.
type Note struct {
	// KeptLive is the recorded table of a degraded device, which serves
	// an `error` table in its place (Degraded says why); "" if it is not
	// degraded.
	KeptLive, Degraded string
	// MergeDeferred: a merge of this snapshot waits for the last user to
	// close.
	MergeDeferred bool
	// Text is the whole note, for people.
	Text string
}

// HolderKinds says which users Host.Holders lists.
type HolderKinds int

const (
	// Openers hold a device open: NBD clients, FUSE files, tables
	// stacked on it.
	Openers HolderKinds = iota
	// OpenersAndMaps are Openers and the DAX mappings of the device.
	OpenersAndMaps
)

// Users are the users of a device, for people.
type Users interface {
	Len() int
	// String says who they are and how each lets go.
	String() string
}

// InUseError refuses a merge because of users; snapshot merge
// --deferred waits for them.
type InUseError struct {
	Users Users
	Err   error
}

func (e *InUseError) Error() string { return e.Err.Error() }
func (e *InUseError) Unwrap() error { return e.Err }

// Manager runs the snapshot verbs on a daemon's devices, as LVM does on
// the kernel's: it owns the jobs finishing merges, the autoextend
// watchers and the recovery of the verbs a stop interrupted.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	devs  *dm.Manager
	store *state.Store
	host  Host

	merges  *mergeJobs // background jobs finishing snapshot merges
	metrics metrics
	// autoext watches snapshots' COW usage and extends them (autoextend.go);
	// defaultAutoextend is the policy of snapshots without their own.
	autoext           *autoextenders
	defaultAutoextend autoPolicy
	// kick wakes the watcher of deferred merges.
	kick chan struct{}
	// run identifies this run of the daemon in changed-block tracking
	// records of transient snapshots, whose exceptions die with it.
	run string
}

// New makes the snapshot manager of devs, whose records store keeps.
func New(cfg Config, devs *dm.Manager, store *state.Store, host Host) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mg := &Manager{cfg: cfg, log: cfg.Logger, devs: devs, store: store, host: host,
		merges: newMergeJobs(), autoext: newAutoextenders(), metrics: newMetrics(), kick: make(chan struct{}, 1),
		run: newTrackingID()}
	snapshot.SetWriteHook(devs, mg.noteWritten)
	if cfg.AutoextendThreshold != 100 {
		p, err := checkAutoextend("serve", cfg.AutoextendThreshold, cfg.AutoextendPercent)
		if err != nil {
			return nil, err
		}
		mg.defaultAutoextend = p
	}
	return mg, nil
}

// WatchDeferredMerges starts the deferred merges whose users have let
// go, now and as they do, until Stop.
func (mg *Manager) WatchDeferredMerges() {
	mg.merges.wg.Add(1)
	go mg.watchDeferredMerges()
}

// Stop ends the merge jobs and the watchers, and waits for them: the
// merges resume at the next start.
func (mg *Manager) Stop() {
	mg.merges.stop()
	mg.autoext.stop()
}

// Forget drops what the manager keeps of a device that is gone.
func (mg *Manager) Forget(dev *dm.Device) { mg.autoext.forget(dev) }

// metrics count snapshot COWs reaching their autoextend threshold, and
// the extensions that followed.
type metrics struct {
	cowThreshold, cowAutoextends *prometheus.CounterVec
}

func newMetrics() metrics {
	return metrics{
		cowThreshold: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "daxsnap", Subsystem: "snapshot",
			Name: "cow_threshold_crossings_total", Help: "Times a snapshot's COW usage reached its autoextend threshold."}, []string{"device"}),
		cowAutoextends: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "daxsnap", Subsystem: "snapshot",
			Name: "cow_autoextends_total", Help: "Times a snapshot's COW file was grown by autoextend."}, []string{"device"}),
	}
}

// Metrics are the manager's series, by device, for the daemon's
// registry, which drops a device's series when it goes.
func (mg *Manager) Metrics() []*prometheus.CounterVec {
	return []*prometheus.CounterVec{mg.metrics.cowThreshold, mg.metrics.cowAutoextends}
}

// errorf words an error of one of dm's classes.
var errorf = dm.Errorf
