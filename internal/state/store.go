package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the state file's name inside the state directory.
const FileName = "daxsnap.db"

// FormatVersion is the layout this package reads and writes.
const FormatVersion = 1

var (
	bucketMeta    = []byte("meta")
	bucketRegions = []byte("regions")
	bucketDevices = []byte("devices")
	bucketMerges  = []byte("merges")
	keyVersion    = []byte("version")
)

// BackupSuffix names the backup of the last good state, next to the
// state file: daxsnap.db.bak.
const BackupSuffix = ".bak"

// Store is an open state file.
type Store struct {
	db   *bolt.DB
	path string
	log  *slog.Logger

	bakMu sync.Mutex // one backup written at a time
}

// Options configure OpenOptions.
type Options struct {
	// LockWait is how long to wait for another daemon to let go of the file.
	LockWait time.Duration
	// Recover replaces a damaged state file (kept aside as
	// daxsnap.db.damaged-UNIXTIME), or a missing or empty one, by its
	// backup of the last good state. Without it such a file is refused,
	// with a DamagedError that says what to do.
	Recover bool
	// Logger receives what Open repaired and backups that failed; nil
	// discards them.
	Logger *slog.Logger
}

// Open opens (creating if needed) dir/daxsnap.db, waiting at most
// lockWait for another daemon to let go of it.
func Open(dir string, lockWait time.Duration) (*Store, error) {
	return OpenOptions(dir, Options{LockWait: lockWait})
}

// OpenOptions opens (creating if needed) dir/daxsnap.db. The file is
// checked before bbolt maps it (CheckFile) and with bbolt's own check
// after: a damaged file is refused with a DamagedError, never opened (a
// truncated one would crash the process), unless opts.Recover asks for
// the backup. A missing or empty file whose backup exists is refused too:
// starting empty would lose every device the backup records. After the
// open, and after every change, the state is copied to daxsnap.db.bak.
func OpenOptions(dir string, opts Options) (*Store, error) {
	path := filepath.Join(dir, FileName)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var damage error
	for try := 0; try < 2; try++ {
		if err := prepare(path, opts, log, damage); err != nil {
			return nil, err
		}
		db, err := openDB(path, opts.LockWait)
		if errors.Is(err, ErrDamaged) {
			damage = err
			continue
		}
		if err != nil {
			return nil, err
		}
		s := &Store{db: db, path: path, log: log}
		if err := s.init(); err != nil {
			db.Close()
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("%w; its backup %s%s did not open either: move both away to start with no devices (see `daxsnap cow adopt` for the COW files that start puts in lost+found)",
		damage, path, BackupSuffix)
}

// openDB opens the bbolt file and runs bbolt's consistency check. A
// fault or panic inside bbolt is a damaged file, not a crash.
func openDB(path string, wait time.Duration) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, &DamagedError{Path: path, Problem: fmt.Sprintf("bbolt failed reading it: %v", r)}
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: wait})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, &LockedError{Path: path, PID: lockHolder(path)}
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, &DamagedError{Path: path, Problem: err.Error()}
	case err != nil:
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			if len(errs) < 3 {
				errs = append(errs, e)
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		db.Close()
		return nil, &DamagedError{Path: path, Problem: "bbolt's check: " + strings.ReplaceAll(err.Error(), "\n", "; ")}
	}
	return db, nil
}

func (s *Store) init() error {
	return s.update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketRegions, bucketDevices, bucketMerges, bucketTracking} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("state file %s: create bucket %s: %w", s.path, b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keyVersion)
		if v == nil {
			return meta.Put(keyVersion, binary.BigEndian.AppendUint32(nil, FormatVersion))
		}
		if len(v) != 4 || binary.BigEndian.Uint32(v) != FormatVersion {
			return fmt.Errorf("state file %s: %w: version %x, this daxsnap reads version %d: use the daxsnap that wrote it, or another --state directory",
				s.path, ErrFormat, v, FormatVersion)
		}
		return nil
	})
}

// Path is the state file's path.
func (s *Store) Path() string { return s.path }

// Close closes the file and releases its lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state file %s: %w", s.path, err)
	}
	return nil
}

// lockHolder finds the pid holding an flock on path in /proc/locks, or 0.
func lockHolder(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	return findLockHolder(string(locks), fi)
}
