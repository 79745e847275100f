package backing

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// probeRegular tells what kind of memory or file a regular file is, from its
// file system (tmpfs, hugetlbfs) and its DAX attribute (fsdax), and its
// mapping granularity (0 for plain files).
func probeRegular(fd int) (Kind, int64, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return 0, 0, fmt.Errorf("statfs: %w", err)
	}
	if name, ok := kernelFS[int64(sfs.Type)]; ok {
		return 0, 0, fmt.Errorf("it is on %s, a kernel interface, not storage: %w; %s", name, ErrUnsupported, accepted)
	}
	switch int64(sfs.Type) {
	case unix.TMPFS_MAGIC:
		return KindTmpfs, int64(os.Getpagesize()), nil
	case unix.HUGETLBFS_MAGIC:
		// hugetlbfs reports its huge page size as the block size.
		return KindHugetlbfs, int64(sfs.Bsize), nil
	}
	dax, err := hasDAXAttr(fd)
	if err != nil {
		return 0, 0, err
	}
	if dax {
		return KindFSDAX, int64(os.Getpagesize()), nil
	}
	return KindFile, 0, nil
}

// hasDAXAttr reports whether the file is accessed in DAX mode (statx
// STATX_ATTR_DAX, Linux 5.8+). Kernels without statx or without the
// attribute report no DAX: daxsnap then uses the file as a plain file.
func hasDAXAttr(fd int) (bool, error) {
	var stx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &stx)
	if errors.Is(err, unix.ENOSYS) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("statx: %w", err)
	}
	return stx.Attributes_mask&unix.STATX_ATTR_DAX != 0 && stx.Attributes&unix.STATX_ATTR_DAX != 0, nil
}

// kernelFS are the file systems whose files are kernel interfaces
// (/proc, /sys, cgroups...): their regular files report a size of 0 or
// of a page, and reading or writing them as a disk means nothing, or harm
// (/proc/self/mem is the daemon's own memory).
var kernelFS = map[int64]string{
	unix.PROC_SUPER_MAGIC:    "procfs",
	unix.SYSFS_MAGIC:         "sysfs",
	unix.CGROUP_SUPER_MAGIC:  "cgroupfs",
	unix.CGROUP2_SUPER_MAGIC: "cgroup2",
	unix.DEBUGFS_MAGIC:       "debugfs",
	unix.TRACEFS_MAGIC:       "tracefs",
	unix.SECURITYFS_MAGIC:    "securityfs",
	unix.BPF_FS_MAGIC:        "bpffs",
	unix.EFIVARFS_MAGIC:      "efivarfs",
	unix.PSTOREFS_MAGIC:      "pstore",
	unix.DEVPTS_SUPER_MAGIC:  "devpts",
	unix.SELINUX_MAGIC:       "selinuxfs",
	unix.SMACK_MAGIC:         "smackfs",
	unix.NSFS_MAGIC:          "nsfs",
	unix.BINFMTFS_MAGIC:      "binfmt_misc",
}
