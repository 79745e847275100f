package testutil

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs with the mount options opts ("size=8m",
// "huge=always,size=64m") on a temporary directory, and unmounts it in
// t.Cleanup. It needs root. Call it before anything that opens or maps the
// directory's files, so that their cleanups, which run first, let go of
// them before the unmount.
func Tmpfs(t testing.TB, opts string) string {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("mount -t tmpfs -o %s tmpfs %s: %v", opts, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v (a file left open or mapped?)", dir, err)
		}
	})
	return dir
}
