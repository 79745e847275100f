package state

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// ErrDamaged: the state file cannot be used as it is.
var ErrDamaged = errors.New("state file is damaged")

// DamagedError says what is wrong with the state file and what to do.
type DamagedError struct {
	Path    string
	Problem string
	// Advice is what to do; Open fills it in from what it found.
	Advice string
}

func (e *DamagedError) Error() string {
	msg := fmt.Sprintf("state file %s: %s", e.Path, e.Problem)
	if e.Advice != "" {
		msg += ": " + e.Advice
	}
	return msg
}

func (e *DamagedError) Unwrap() error { return ErrDamaged }

// prepare checks the state file before bbolt maps it and, when it is
// damaged (damage is what an earlier open found, or what CheckFile finds
// now) or missing while a backup exists, refuses it with advice or, with
// opts.Recover, puts the backup in its place.
func prepare(path string, opts Options, log *slog.Logger, damage error) error {
	unlock, err := lockPath(path, opts.LockWait)
	if err != nil {
		return err
	}
	defer unlock()
	missing := false
	if damage == nil {
		data, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist) || err == nil && len(data) == 0:
			missing = true
		case err != nil:
			return fmt.Errorf("read state file %s: %w", path, err)
		default:
			if cerr := CheckFile(data); cerr != nil {
				damage = &DamagedError{Path: path, Problem: cerr.Error()}
			}
		}
	}
	if damage == nil && !missing {
		if opts.Recover {
			log.Info("--recover: the state file is sound; using it, not its backup", "path", path)
		}
		return nil
	}
	bak := path + BackupSuffix
	when, bakErr := checkBackup(bak)
	if missing {
		if bakErr != nil {
			if opts.Recover {
				log.Warn("--recover: no state file and no usable backup; starting with no devices", "path", path, "backup", bakErr)
			}
			return nil // a new state directory, or one whose backup is gone too
		}
		if !opts.Recover {
			return &DamagedError{Path: path, Problem: "missing or empty",
				Advice: fmt.Sprintf("its backup %s (the state of %s) is there: start with `daxsnap serve --recover` to bring back the devices it records; to start with no devices instead, move the backup away", bak, when)}
		}
	} else {
		de := &DamagedError{Path: path}
		if !errors.As(damage, &de) {
			de = &DamagedError{Path: path, Problem: damage.Error()}
		}
		switch {
		case bakErr != nil:
			de.Advice = fmt.Sprintf("there is no usable backup (%v): move %s away and start again with no devices; COW files then go to lost+found in the state directory, and `daxsnap cow adopt` makes snapshots of them again", bakErr, path)
			return de
		case !opts.Recover:
			de.Advice = fmt.Sprintf("start with `daxsnap serve --recover` to go back to its backup %s (the state of %s); the damaged file is then kept beside it", bak, when)
			return de
		}
		aside := fmt.Sprintf("%s.damaged-%d", path, time.Now().Unix())
		if err := os.Rename(path, aside); err != nil {
			return fmt.Errorf("--recover: move the damaged state file aside: %w", err)
		}
		log.Warn("--recover: damaged state file moved aside", "path", aside, "problem", de.Problem)
	}
	data, err := os.ReadFile(bak)
	if err != nil {
		return fmt.Errorf("--recover: read backup %s: %w", bak, err)
	}
	if err := writeAtomic(path, func(f *os.File) error { _, err := f.Write(data); return err }); err != nil {
		return fmt.Errorf("--recover: restore %s from %s: %w", path, bak, err)
	}
	log.Warn("--recover: state restored from its backup", "path", path, "backup", bak, "state_of", when)
	return nil
}

// checkBackup reports when the backup at path was written, or why it
// cannot be used.
func checkBackup(path string) (time.Time, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	if err := CheckFile(data); err != nil {
		return time.Time{}, fmt.Errorf("backup %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime().UTC().Truncate(time.Second), nil
}

// backup copies the committed state to daxsnap.db.bak, atomically (a
// temporary file, synced, renamed). A failed backup leaves the last one in
// place and is logged: the change it follows has happened all the same.
func (s *Store) backup() {
	s.bakMu.Lock()
	defer s.bakMu.Unlock()
	err := s.db.View(func(tx *bolt.Tx) error {
		return writeAtomic(s.path+BackupSuffix, func(f *os.File) error { _, err := tx.WriteTo(f); return err })
	})
	if err != nil {
		s.log.Warn("state backup not written; the previous one stays", "path", s.path+BackupSuffix, "err", err)
	}
}

// update runs fn in a write transaction, then backs the state up.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	if err := s.db.Update(fn); err != nil {
		return err
	}
	s.backup()
	return nil
}

// writeAtomic writes path through a temporary file, synced and renamed
// over it. The directory is not synced: after a crash path holds the old
// contents or the new, both whole (for the backup, both good states; the
// sync would double the cost of every state change).
func writeAtomic(path string, write func(*os.File) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// lockPath takes the flock bbolt takes on an existing state file, so that
// nothing is checked or replaced under a running daemon.
func lockPath(path string, wait time.Duration) (unlock func(), err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || !time.Now().Before(deadline) {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &LockedError{Path: path, PID: lockHolder(path)}
			}
			return nil, fmt.Errorf("lock state file %s: %w", path, err)
		}
		time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
	}
}
