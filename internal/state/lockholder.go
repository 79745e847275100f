package state

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"syscall"
)

// findLockHolder returns the pid of the FLOCK holder of fi's inode in the
// text of /proc/locks, or 0. Lines look like
// "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (fs/locks.c prints
// the device as %02x:%02x and the inode in decimal); lines of waiters
// ("1: -> FLOCK ...") are skipped.
func findLockHolder(locks string, fi fs.FileInfo) int {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	want := fmt.Sprintf("%02x:%02x:%d", major(st.Dev), minor(st.Dev), st.Ino)
	for _, line := range strings.Split(locks, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil {
			return pid
		}
	}
	return 0
}

// major and minor split a Linux dev_t (glibc's gnu_dev_major/minor).
func major(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^uint64(0xfff) }
func minor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^uint64(0xff) }
