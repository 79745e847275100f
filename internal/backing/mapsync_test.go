package backing

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Ensure that asking for MAP_SYNC where the kernel cannot give it (a
// non-DAX ext4 file, a tmpfs file) maps the file without it and the device
// says dax without sync: never a silent claim of durability.
func TestMapSync_refusedIsReported(t *testing.T) {
	for _, dir := range []string{t.TempDir(), "/dev/shm"} {
		f, err := os.CreateTemp(dir, "mapsync-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if err := f.Truncate(1 << 20); err != nil {
			t.Fatal(err)
		}
		mem, synced, err := mapShared(int(f.Fd()), 1<<20, mapping{trySync: true})
		if err != nil {
			t.Fatalf("%s: mapShared with MAP_SYNC refused should fall back, got %v", f.Name(), err)
		}
		unmap(mem)
		if synced {
			t.Fatalf("%s: MAP_SYNC reported granted on a file that is not DAX", f.Name())
		}
	}
	// The same through the fsdax constructor, as if statx had said DAX.
	path := filepath.Join(t.TempDir(), "notdax")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, st, err := openNode(path, Options{}, unix.S_IFREG)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := newMemoryFile(f, path, st, KindFSDAX, int64(os.Getpagesize()), Options{})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	defer dev.Close()
	if dev.Capabilities() != DAX || dev.Kind() != KindFSDAX || dev.sync {
		t.Fatalf("fsdax open of a non-DAX file: caps %v, kind %v, sync %v; want dax, fsdax file, false", dev.Capabilities(), dev.Kind(), dev.sync)
	}
}

// Ensure that plain files on this machine are not mistaken for DAX files.
func TestProbeRegular_noDAXOnDisk(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "probe-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kind, _, err := probeRegular(int(f.Fd()))
	if err != nil || kind != KindFile {
		t.Fatalf("probe of a file in %s: %v, %v; want a regular file", filepath.Dir(f.Name()), kind, err)
	}
}
