package snapshots

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// A snapshot of a memory origin (every byte of it on tmpfs or hugetlbfs)
// gets its COW on tmpfs, in Config.MemCOWDir, unless Config.COWDir sends
// every COW elsewhere: there the exception commits' flushes cost nothing,
// and the COW is exactly as durable as the origin (docs/decisions.md).
// The directory is the daemon's own, named after its state directory
// (MemCOWDirIn), so two daemons never tidy each other's files; on
// /dev/shm, which every user may write, it must be a 0700 directory of
// the daemon's uid, not a link, or the daemon does not use it.

// MemCOWDirIn is the memory COW directory of the daemon whose state
// directory is stateDir, on the tmpfs directory base (the daemon's pmem
// directory, /dev/shm by default): base/daxsnap-cow-UID-HASH, HASH the
// first 12 hex digits of the SHA-256 of the state directory's absolute
// path.
func MemCOWDirIn(base, stateDir string) string {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		abs = stateDir
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(base, fmt.Sprintf("daxsnap-cow-%d-%s", os.Geteuid(), hex.EncodeToString(sum[:6])))
}

// cowDirs are the directories the daemon creates COW files in: cowDir,
// then MemCOWDir when memory origins get theirs there and it is the
// daemon's own (checkOwnDir). Another's is never looked at: the start's
// tidying moves the files of these directories, and a link someone made
// at MemCOWDir's predictable name on /dev/shm would have it move the
// files of the directory it points to (/etc, for a root daemon).
func (mg *Manager) cowDirs() []string {
	if d := mg.memCOWDir(); d != "" && checkOwnDir(d) == nil {
		return []string{mg.cowDir(), d}
	}
	return []string{mg.cowDir()}
}

// memCOWDir is where COWs of memory origins go, "" if with the others.
func (mg *Manager) memCOWDir() string {
	if mg.cfg.COWDir != "" || mg.cfg.MemCOWDir == "" {
		return ""
	}
	return mg.cfg.MemCOWDir
}

// lostDirOf is the lost+found of COW directory dir: beside the COW files
// on their file system, so that moving one in and out is a rename
// (<state>/lost+found for <state>/cow).
func (mg *Manager) lostDirOf(dir string) string {
	if mg.cfg.COWDir == "" && dir == mg.cowDir() {
		return filepath.Join(mg.cfg.Dir, LostFoundDir)
	}
	return filepath.Join(dir, LostFoundDir)
}

// cowDirFor is the directory for the COW of a new snapshot of origin,
// and why, for the create note ("" for the usual directory).
func (mg *Manager) cowDirFor(origin *dm.Device) (dir, why string) {
	mem := mg.memCOWDir()
	if mem == "" || !memoryOrigin(origin) {
		return mg.cowDir(), ""
	}
	if err := ensureOwnDir(mem); err != nil {
		mg.log.Warn("the COW of a snapshot of a memory origin goes to the state directory instead of tmpfs", "origin", origin.Name(), "err", err)
		return mg.cowDir(), fmt.Sprintf(" It is on disk, not on tmpfs with %s's memory: %v.", origin.Name(), err)
	}
	return mem, fmt.Sprintf(" It is on tmpfs, as %s's memory is: it survives a daemon restart, not a reboot, like the origin; serve --cow-dir chooses another place.", origin.Name())
}

// memoryOrigin reports whether every byte of origin is on tmpfs or
// hugetlbfs (through any mapped devices it stacks on).
func memoryOrigin(origin *dm.Device) bool {
	size := origin.Size()
	if size <= 0 {
		return false
	}
	exts, err := origin.Extents(0, size)
	if err != nil || len(exts) == 0 {
		return false
	}
	for _, e := range exts {
		if e.Kind != backing.KindTmpfs && e.Kind != backing.KindHugetlbfs {
			return false
		}
	}
	return true
}

// ensureOwnDir makes dir 0700, or checks the one there: a directory, not
// a link, of the daemon's uid, that nobody else may write. Anyone may
// make a directory on /dev/shm first and then read or swap the files in it.
func ensureOwnDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	return checkOwnDir(dir)
}

// checkOwnDir is ensureOwnDir for a directory that must be there already.
func checkOwnDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	self := uint32(os.Geteuid())
	var problem string
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		problem = "is a symbolic link"
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		problem = "is not a directory"
	case st.Uid != self:
		problem = fmt.Sprintf("is owned by uid %d, not by the daemon's uid %d", st.Uid, self)
	case st.Mode&0o077 != 0:
		problem = fmt.Sprintf("has mode %04o, not 0700", st.Mode&0o7777)
	}
	if problem == "" {
		if !onTmpfs(dir) {
			return fmt.Errorf("COW directory %s is not on tmpfs: give serve --cow-dir the directory for COW files", dir)
		}
		return nil
	}
	return fmt.Errorf("COW directory %s %s: check who made it and what is in it, and remove it (the daemon makes it again, 0700)", dir, problem)
}

// onTmpfs reports whether dir is on tmpfs.
func onTmpfs(dir string) bool {
	var sfs unix.Statfs_t
	return unix.Statfs(dir, &sfs) == nil && sfs.Type == unix.TMPFS_MAGIC
}
