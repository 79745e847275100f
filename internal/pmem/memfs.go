package pmem

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/dm"
	"golang.org/x/sys/unix"
)

// memFS describes the file system a region directory is on.
type memFS struct {
	name     string // "tmpfs" or "hugetlbfs"
	pageSize int64
	free     int64 // bytes; -1 if the mount has no size limit to report
}

// probeMemFS checks that dir is a directory on tmpfs or hugetlbfs.
func probeMemFS(op, dir string) (memFS, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return memFS{}, errorf(dm.ErrInvalidArgument, "%s: cannot use %s: %v: give --dir a tmpfs or hugetlbfs mount such as %s", op, dir, err, DefaultDir)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return memFS{}, errorf(dm.ErrInvalidArgument, "%s: %s is not a directory: give --dir a tmpfs or hugetlbfs mount such as %s", op, dir, DefaultDir)
	}
	free := int64(st.Bavail) * st.Bsize
	if st.Blocks == 0 {
		free = -1 // mounted without a size: fallocate finds out
	}
	var fs memFS
	switch uint32(st.Type) {
	case unix.TMPFS_MAGIC:
		fs = memFS{name: "tmpfs", pageSize: int64(os.Getpagesize()), free: free}
	case unix.HUGETLBFS_MAGIC:
		fs = memFS{name: "hugetlbfs", pageSize: st.Bsize, free: free}
	}
	if fs.name != "" {
		return fs, checkMount(op, dir)
	}
	return memFS{}, errorf(dm.ErrInvalidArgument, "%s: %s is not on tmpfs or hugetlbfs (file system magic %#x): a memory region must live in memory: use %s, or mount one (mount -t tmpfs none DIR)",
		op, dir, st.Type, DefaultDir)
}

// createRegionFile creates path and reserves size bytes in it, so the
// memory is really there when a table maps it; without reserve it only
// checks that the file system has that much free and leaves the file a
// hole (a restore on demand fills only holes). On failure nothing is
// left.
func createRegionFile(path string, size int64, reserve bool) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return errorf(dm.ErrExists, "%s already exists: pick another name, or delete the file if nothing uses it", path)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if !reserve {
		var st unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
			return fmt.Errorf("statfs %s: %w", path, err)
		}
		if free := int64(st.Bavail) * st.Bsize; st.Blocks > 0 && free < size {
			return errorf(dm.ErrNoSpace, "%s needs %d bytes and its file system has %d free: choose a smaller size or free some", path, size, free)
		}
		return f.Truncate(size)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return errorf(dm.ErrNoSpace, "reserve %d bytes for %s: not enough memory in its file system (mount size, huge pages or RAM): choose a smaller size or free some", size, path)
		}
		return fmt.Errorf("reserve %d bytes for %s: fallocate: %w", size, path, err)
	}
	return nil
}
