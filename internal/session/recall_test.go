package session

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Ensure that the recall's check finds a mapping of a memory file in a
// process's address range, and only there, and not once it is unmapped.
func TestMapsFiles(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-maps-")
	if err != nil {
		t.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "mem")
	if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	id := backing.ID{Dev: st.Dev, Ino: st.Ino}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	lo := uint64(uintptr(unsafe.Pointer(&mem[0])))
	pid := os.Getpid()
	if line, err := mapsFiles(pid, lo, lo+8192, []backing.ID{id}); err != nil || line == "" {
		t.Fatalf("mapsFiles of the mapped range = %q, %v; want its line", line, err)
	}
	if line, _ := mapsFiles(pid, lo+8192, lo+16384, []backing.ID{id}); line != "" {
		t.Errorf("mapsFiles past the mapping = %q, want none", line)
	}
	if line, _ := mapsFiles(pid, lo, lo+8192, []backing.ID{{Dev: id.Dev, Ino: id.Ino + 1}}); line != "" {
		t.Errorf("mapsFiles of another file = %q, want none", line)
	}
	if !MapsAny(pid, []backing.ID{id}) || MapsAny(pid, []backing.ID{{Dev: id.Dev, Ino: id.Ino + 1}}) {
		t.Errorf("MapsAny of the mapped file, another file = %v, %v; want true, false",
			MapsAny(pid, []backing.ID{id}), MapsAny(pid, []backing.ID{{Dev: id.Dev, Ino: id.Ino + 1}}))
	}
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	if line, err := mapsFiles(pid, lo, lo+8192, []backing.ID{id}); err != nil || line != "" {
		t.Errorf("mapsFiles after munmap = %q, %v; want none", line, err)
	}
	if MapsAny(pid, []backing.ID{id}) {
		t.Errorf("MapsAny after munmap = true, want false")
	}
}
