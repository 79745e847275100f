package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	keyVersion    = []byte("version")
)

// Store is an open state file.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens (creating if needed) dir/daxsnap.db, waiting at most
// lockWait for another daemon to let go of it.
func Open(dir string, lockWait time.Duration) (*Store, error) {
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, &LockedError{Path: path, PID: lockHolder(path)}
	}
	if err != nil {
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketRegions, bucketDevices} {
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
