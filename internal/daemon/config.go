package daemon

import (
	"log/slog"
	"os"
	"time"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/snapshots"
)

// Defaults.
const (
	// DefaultPmemDir is where memory regions go unless told otherwise.
	DefaultPmemDir = pmem.DefaultDir
	// DefaultHugetlbDir is where huge-page regions go unless told otherwise.
	DefaultHugetlbDir = pmem.DefaultHugetlbDir
	// SocketName and NBDSocketName are the sockets in the state directory.
	SocketName    = "daxsnap.sock"
	NBDSocketName = "nbd.sock"
	// FUSEDirName is `daxsnap serve`'s FUSE mount point in the state
	// directory unless told otherwise.
	FUSEDirName = "fuse"
	// StateEnv names the environment variable holding the state directory.
	StateEnv = "DAXSNAP_STATE"
)

// Config configures a daemon. The zero value is usable: state in
// DefaultStateDir(), no TCP export, NBD on <state>/nbd.sock, no FUSE mount.
type Config struct {
	StateDir string // default DefaultStateDir()
	// COWDir is where the daemon creates the COW files of snapshots made
	// without --cow (serve --cow-dir), with its lost+found; default
	// <state>/cow and <state>/lost+found, but for an origin all in memory
	// (tmpfs, hugetlbfs) PmemDir/daxsnap-cow-UID-HASH (snapshots.MemCOWDirIn,
	// this daemon's own) and its lost+found. One daemon per directory: it
	// moves files there that no snapshot of its own uses to lost+found.
	COWDir string
	// RuntimeDir holds the sockets (control, NBD, DAX sessions); default
	// StateDir. The systemd unit puts them in /run/daxsnap.
	RuntimeDir string
	// NBDAddr is a TCP address for NBD; "" exports on the unix socket
	// only. TCP needs NBDTLSCreds, or NBDInsecure and a loopback address
	// (nbdauth.go says who may do what through each).
	NBDAddr string
	// NBDTLSCreds is a directory with ca-cert.pem, server-cert.pem and
	// server-key.pem: TCP clients must STARTTLS with a certificate the CA
	// signed, which NBDTLSAuthz (a file of "USER SUBJECT" lines) maps to
	// a local user, or else whose CN names one.
	NBDTLSCreds string
	NBDTLSAuthz string
	// NBDInsecure allows plain TCP on a loopback address: clients are
	// anonymous and get only what each device's other bits allow.
	NBDInsecure bool
	NoNBDUnix   bool // do not listen on <state>/nbd.sock
	// MetricsAddr is a TCP address (HOST:PORT) to serve /metrics on for
	// Prometheus (serve --metrics-addr); "" serves it only on the
	// control socket.
	MetricsAddr string
	PmemDir     string // default DefaultPmemDir
	// FUSEDir is where every device is a file (internal/export/fusefs);
	// "" mounts nothing. A mount that fails is a warning, not an error.
	FUSEDir string
	Version string // reported by GET /v1/version
	Logger  *slog.Logger
	// LockWait is how long to wait for another daemon to release the
	// state file before refusing to start (default 200ms).
	LockWait time.Duration
	// Recover puts the backup of the last good state (daxsnap.db.bak)
	// in place of a damaged, missing or empty state file (serve --recover).
	Recover bool
	// RecallTimeout is how long client processes get to give back DAX
	// mappings a table change moves (default 5s).
	RecallTimeout time.Duration
	// Snapshots is the snapshot manager's autoextend policy and test
	// knobs (FailStep); its directories and logger are the daemon's.
	Snapshots snapshots.Config
	// ShutdownTimeout, if not 0, is how long a stop waits for the users
	// of the devices (loop devices, NBD clients, DAX mappings) to let go
	// before it forces them off (ServeUntilSignal). 0 waits until they do,
	// or until a second signal.
	ShutdownTimeout time.Duration
	// ControlLimits bound the control socket's clients: read timeouts
	// and the cap on other users' connections (zero: api.DefaultLimits).
	ControlLimits api.Limits
	// LazyRestore: a checkpointed volume whose memory is gone at start
	// serves at once, its memory restored from the image on demand
	// (first touch of a unit, by a mapping or a block I/O) and in the
	// background (checkpoint_lazy.go); without it the start restores it
	// whole before serving.
	LazyRestore bool
	// CheckpointDevs, if set, opens the image and journal of every
	// checkpointed volume in place of their files (tests: crash devices).
	CheckpointDevs CheckpointDevs
}

// DefaultStateDir is $DAXSNAP_STATE, or ./daxsnap-state.
func DefaultStateDir() string {
	if dir := os.Getenv(StateEnv); dir != "" {
		return dir
	}
	return "./daxsnap-state"
}

func (c Config) withDefaults() Config {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir()
	}
	if c.RuntimeDir == "" {
		c.RuntimeDir = c.StateDir
	}
	if c.PmemDir == "" {
		c.PmemDir = DefaultPmemDir
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.LockWait == 0 {
		c.LockWait = 200 * time.Millisecond
	}
	if c.RecallTimeout == 0 {
		c.RecallTimeout = 5 * time.Second
	}
	return c
}
