package backing_test

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Helpers that create real media for the tests, each removed in t.Cleanup.

const testSize = 1 << 20

func randomBytes(seed uint64, n int64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// writeFile creates path with size random bytes.
func writeFile(t *testing.T, path string, size int64) string {
	t.Helper()
	if err := os.WriteFile(path, randomBytes(uint64(size), size), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tmpfsFile returns a file of size random bytes on /dev/shm.
func tmpfsFile(t *testing.T, size int64) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-backing-")
	if errors.Is(err, os.ErrNotExist) {
		testutil.Skip(t, "/dev/shm does not exist: mount a tmpfs there (mount -t tmpfs tmpfs /dev/shm)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return writeFile(t, filepath.Join(dir, "mem"), size)
}

// diskFile returns a file of size random bytes on the file system of
// t.TempDir (ext4 here), failing if that is a memory file system.
func diskFile(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Type == unix.TMPFS_MAGIC {
		t.Fatalf("%s is on tmpfs: point TMPDIR at a block file system (ext4, xfs) for the plain-file tests", dir)
	}
	return writeFile(t, filepath.Join(dir, "disk.img"), size)
}

// loopDevice attaches a loop device over a file of size random bytes and
// returns its node; sectorSize 0 keeps the default of 512.
func loopDevice(t *testing.T, size int64, sectorSize int) string {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		testutil.Skip(t, "no /dev/loop-control: the loop driver is not available here (modprobe loop)")
	}
	var flags []string
	if sectorSize != 0 {
		flags = []string{"--sector-size", strconv.Itoa(sectorSize)}
	}
	return testutil.AttachLoop(t, diskFile(t, size), flags...).Dev
}

// filledHugetlbfsFile makes a file of pages huge pages on a hugetlbfs of its
// own, with pages more huge pages in the pool, and fills it through the
// device itself (hugetlbfs has no write(2)). It returns the path and the
// huge page size.
func filledHugetlbfsFile(t *testing.T, pages int64) (string, int64) {
	t.Helper()
	path, pageSize := testutil.HugetlbfsFile(t, pages, testutil.Raise)
	dev, err := backing.Open(path, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.WriteAt(randomBytes(7, pages*pageSize), 0); err != nil {
		t.Fatal(err)
	}
	return path, pageSize
}

// opener returns a backingtest opener for path.
func opener(path string, ro bool) func(t *testing.T) backing.Device {
	return func(t *testing.T) backing.Device {
		t.Helper()
		dev, err := backing.Open(path, backing.Options{ReadOnly: ro})
		if err != nil {
			t.Fatal(err)
		}
		return dev
	}
}
