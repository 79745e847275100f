package state

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Ensure that /proc/locks lines are matched on device and inode, and that
// waiters are skipped.
func TestFindLockHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, nil, 0o600)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	locks := "1: POSIX  ADVISORY  WRITE 11 " + id + " 0 EOF\n" +
		"2: FLOCK  ADVISORY  WRITE 22 00:01:1 0 EOF\n" +
		"3: -> FLOCK  ADVISORY  WRITE 33 " + id + " 0 EOF\n" +
		"3: FLOCK  ADVISORY  WRITE 44 " + id + " 0 EOF\n"
	if got := findLockHolder(locks, fi); got != 44 {
		t.Fatalf("holder = %d, want 44", got)
	}
	if got := findLockHolder("garbage\n\n1:", fi); got != 0 {
		t.Fatalf("holder in garbage = %d, want 0", got)
	}
}
