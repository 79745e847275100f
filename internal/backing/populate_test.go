package backing_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
)

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// Ensure that Populate allocates the holes of a tmpfs memory file, widened
// to whole pages, changes no data, and is refused read-only or out of range.
func TestMemory_Populate(t *testing.T) {
	data := tmpfsFile(t, 4096) // a directory on /dev/shm with one page of data
	path := filepath.Join(filepath.Dir(data), "sparse")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	dev, err := backing.Open(path, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	p, ok := dev.(backing.Populater)
	if !ok {
		t.Fatalf("a tmpfs memory device (%T) is not a Populater", dev)
	}
	want := []byte("written before populating")
	if _, err := dev.WriteAt(want, 3*4096+100); err != nil {
		t.Fatal(err)
	}
	before := allocated(t, path)
	if err := p.Populate(2*4096+1, 3*4096); err != nil { // pages 2 to 5
		t.Fatal(err)
	}
	if got := allocated(t, path) - before; got != 3*4096 {
		t.Errorf("Populate of pages 2-5 (3 of them holes) allocated %d bytes, want %d", got, 3*4096)
	}
	got := make([]byte, len(want))
	if _, err := dev.ReadAt(got, 3*4096+100); err != nil || !bytes.Equal(got, want) {
		t.Errorf("data after Populate = %q (%v), want %q", got, err, want)
	}
	zero := make([]byte, 4096)
	if _, err := dev.ReadAt(zero, 4*4096); err != nil || !bytes.Equal(zero, make([]byte, 4096)) {
		t.Errorf("a populated hole does not read as zeroes (%v)", err)
	}
	if err := p.Populate(size-4096, 8192); !errors.Is(err, backing.ErrOutOfRange) {
		t.Errorf("Populate past the end = %v, want ErrOutOfRange", err)
	}

	ro, err := backing.Open(path, backing.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.(backing.Populater).Populate(0, 4096); !errors.Is(err, syscall.EROFS) {
		t.Errorf("Populate of a read-only device = %v, want EROFS", err)
	}
}
