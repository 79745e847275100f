package pmem

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
)

// Region directories and files are the daemon's own. DIR/daxsnap is made
// 0700 by the daemon's uid, or, if it exists, must be a directory (not a
// link) of that uid that nobody else may write: on /dev/shm, which every
// user may write, anyone could make it first and then swap the region
// files inside for their own. A region file is opened O_NOFOLLOW and must
// be the inode, with the owner, recorded when it was made.

// ensureRegionDir makes dir/daxsnap (0700) or checks the one there, and
// returns its path.
func ensureRegionDir(op, dir string) (string, error) {
	sub := filepath.Join(dir, Subdir)
	err := os.Mkdir(sub, 0o700)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("%s: make the region directory: %w", op, err)
	}
	if err := checkRegionDir(sub); err != nil {
		return "", errorf(dm.ErrInvalidArgument, "%s: %v", op, err)
	}
	return sub, nil
}

// checkRegionDir says what is wrong with dir as a region directory.
func checkRegionDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("region directory %s: %w", dir, err)
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
	case st.Mode&0o022 != 0:
		problem = fmt.Sprintf("has mode %04o: users other than its owner may write it", st.Mode&0o7777)
	default:
		return nil
	}
	return fmt.Errorf("region directory %s %s, so someone else could replace the region files in it: "+
		"check who made it and what is in it, remove it (the daemon makes it again, 0700) or give --dir another directory", dir, problem)
}

// regionFileCheck is the check a region's file must pass when it is
// opened: the inode and owner recorded (or, for an older record, the
// daemon's uid as owner).
func regionFileCheck(rec state.Region) func(st *unix.Stat_t) error {
	return func(st *unix.Stat_t) error {
		wantUID := uint32(os.Geteuid())
		if rec.Ino != 0 {
			wantUID = rec.UID
		}
		switch {
		case rec.Ino != 0 && (st.Ino != rec.Ino || st.Dev != rec.Dev):
			return fmt.Errorf("it is not the file pmem create made for region %s (inode %d on device %#x, not %d on %#x): "+
				"it was replaced, so the daemon does not use it: find out who replaced it; `daxsnap pmem remove %s` forgets the region",
				rec.Name, st.Ino, st.Dev, rec.Ino, rec.Dev, rec.Name)
		case st.Uid != wantUID:
			return fmt.Errorf("region %s's file is owned by uid %d, not by uid %d that made it: it was replaced or changed, so the daemon does not use it: "+
				"find out who did; `daxsnap pmem remove %s` forgets the region", rec.Name, st.Uid, wantUID, rec.Name)
		}
		return nil
	}
}

// CheckFile checks rec's file as it is now, not following a link.
func CheckFile(rec state.Region) error {
	var st unix.Stat_t
	if err := unix.Lstat(rec.Path, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s is no longer a regular file (a link or something else was put in its place), so the daemon does not use it: "+
			"find out who replaced it; `daxsnap pmem remove %s` forgets the region", rec.Path, rec.Name)
	}
	if err := checkRegionDir(filepath.Dir(rec.Path)); err != nil {
		return err
	}
	return regionFileCheck(rec)(&st)
}

// identify records in rec the file it names, as just made.
func identify(rec *state.Region) error {
	var st unix.Stat_t
	if err := unix.Lstat(rec.Path, &st); err != nil {
		return err
	}
	rec.UID, rec.Dev, rec.Ino = st.Uid, st.Dev, st.Ino
	return nil
}

// Open is the opener of backing files (dm.NewDevicePool's): a region's
// file must be the one pmem create made, in a directory only the
// daemon's uid writes; any other file opens as backing.Open opens it.
func (m *Manager) Open(name string, opts backing.Options) (backing.Device, error) {
	if rec, ok := m.regionAt(name); ok {
		if err := checkRegionDir(filepath.Dir(name)); err != nil {
			return nil, fmt.Errorf("open region %s: %w", rec.Name, err)
		}
		opts.NoFollow, opts.Verify = true, regionFileCheck(rec)
	}
	return backing.Open(name, opts)
}

// regionAt is the region whose file is path, if any.
func (m *Manager) regionAt(path string) (state.Region, bool) {
	recs, err := m.store.Regions()
	if err != nil {
		return state.Region{}, false
	}
	for _, rec := range recs {
		if rec.Path == path {
			return rec, true
		}
	}
	return state.Region{}, false
}

// regionOf is the region whose file is st (path, as a table names it),
// if any: by inode, or by path for a record from before the daemon kept
// inodes.
func (m *Manager) regionOf(path string, st *unix.Stat_t) (state.Region, bool) {
	recs, err := m.store.Regions()
	if err != nil {
		return state.Region{}, false
	}
	for _, rec := range recs {
		if rec.Ino != 0 && rec.Dev == st.Dev && rec.Ino == st.Ino || rec.Ino == 0 && rec.Path == path {
			return rec, true
		}
	}
	return state.Region{}, false
}

// removeRegionDir removes dir, a region directory, once it is empty and
// no region record is in it.
func (m *Manager) removeRegionDir(dir string) {
	if filepath.Base(dir) != Subdir {
		return
	}
	recs, err := m.store.Regions()
	if err != nil {
		return
	}
	for _, rec := range recs {
		if filepath.Dir(rec.Path) == dir {
			return
		}
	}
	if err := os.Remove(dir); err == nil {
		m.log.Info("pmem region directory removed: no region left in it", "dir", dir)
	}
}

// kernelDirs hold the kernel's own interfaces: a tmpfs mounted there
// (cgroup v1's /sys/fs/cgroup is one) is not for memory regions.
var kernelDirs = []string{"/proc", "/sys"}

// checkMount refuses a directory whose mount is not tmpfs or hugetlbfs
// (devtmpfs reports tmpfs's magic) or is one of the kernel's.
func checkMount(op, dir string) error {
	mp, fstype, err := mountOf(dir)
	if err != nil {
		return errorf(dm.ErrInvalidArgument, "%s: cannot tell which mount %s is on: %v: give --dir a tmpfs or hugetlbfs mount such as %s", op, dir, err, DefaultDir)
	}
	if fstype != "tmpfs" && fstype != "hugetlbfs" {
		return errorf(dm.ErrInvalidArgument, "%s: %s is on %s (mounted at %s), not tmpfs or hugetlbfs: use %s, or mount one (mount -t tmpfs none DIR)",
			op, dir, fstype, mp, DefaultDir)
	}
	for _, k := range kernelDirs {
		if mp == k || strings.HasPrefix(mp, k+"/") {
			return errorf(dm.ErrInvalidArgument, "%s: %s is on the %s mounted at %s, which holds the kernel's interfaces, not memory regions: use %s, or mount a tmpfs for them (mount -t tmpfs none DIR)",
				op, dir, fstype, mp, DefaultDir)
		}
	}
	return nil
}

// mountOf finds the mount point and file system type of dir in
// /proc/self/mountinfo: the longest mount point above it on the same
// device.
func mountOf(dir string) (mountPoint, fstype string, err error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", "", err
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return "", "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return "", "", err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	devID := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) || fields[2] != devID {
			continue
		}
		mp := UnescapeMount(fields[4])
		if (mp == "/" || real == mp || strings.HasPrefix(real, mp+"/")) && len(mp) >= len(mountPoint) {
			mountPoint, fstype = mp, fields[sep+1]
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	if mountPoint == "" {
		return "", "", fmt.Errorf("no mount of device %s above %s in /proc/self/mountinfo", devID, real)
	}
	return mountPoint, fstype, nil
}

// UnescapeMount undoes mountinfo's octal escapes (\040 for a space).
func UnescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
