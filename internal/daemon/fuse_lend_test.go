package daemon_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Ensure that reads of a memory volume's FUSE file, and of its
// ORIGIN-real once it has a snapshot, are answered from the memory
// without a copy: the daemon's wrappers of the device (metrics, revoke,
// read-only) pass the device's loans on.
func TestDaemon_fuseReadsLend(t *testing.T) {
	e := newFUSEEnv(t)
	e.pmemVol("vol", 8*mib)
	e.snap("vol", "s1")
	for _, name := range []string{"vol", "vol-real"} {
		ok, err := daemon.LendsFUSE(e.d, name, mib, mib)
		if err != nil || !ok {
			t.Errorf("read of 1 MiB of %s's FUSE file: lent %v, %v; want it lent", name, ok, err)
		}
	}
}

// Ensure that ext4 runs on a FUSE file attached with direct I/O
// (losetup --direct-io=on, what docs/fuse.md recommends: the loop driver
// then keeps the queue depth), mkfs to fsck, and reads back what was
// written after a fresh mount.
func TestDaemon_fuseLoopDirectIO(t *testing.T) {
	testutil.RequireTool(t, "losetup", "mkfs.ext4", "e2fsck", "mount", "umount")
	e := newFUSEEnv(t)
	e.pmemVol("vol", 64*mib)
	loop := testutil.AttachLoop(t, filepath.Join(e.d.FUSEDir(), "vol"), "--direct-io=on")
	e.waitOpenCount("vol", 1)
	dio, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(loop.Dev), "loop", "dio"))
	if err != nil || strings.TrimSpace(string(dio)) != "1" {
		t.Fatalf("%s: direct I/O %q, %v; want 1 (losetup --direct-io=on over a FUSE file)", loop.Dev, dio, err)
	}
	run(t, "mkfs.ext4", "-q", loop.Dev)
	mnt := mountAt(t, loop.Dev)
	files := map[string][]byte{"a": randomBytes(5 * mib), "dir/b": randomBytes(100 << 10)}
	for name, data := range files {
		writeFile(t, filepath.Join(mnt, name), data)
	}
	run(t, "umount", mnt)
	run(t, "e2fsck", "-fn", loop.Dev)
	mnt = mountAt(t, loop.Dev, "-o", "ro")
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after a fresh mount: %v, equal to what was written: %v", name, err, bytes.Equal(got, want))
		}
	}
	run(t, "umount", mnt)
	detach(t, loop)
	e.waitOpenCount("vol", 0)
}
