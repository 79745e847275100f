package persist

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Ensure that Msync accepts unaligned ranges of a shared file mapping and
// the data reaches the file.
func TestMsync_sharedFileMapping(t *testing.T) {
	page := os.Getpagesize()
	f, err := os.Create(filepath.Join(t.TempDir(), "m"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(3 * page)); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, 3*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(m)
	copy(m[page-3:], "spans two pages")
	for _, r := range [][2]int{{page - 3, page + 12}, {1, 2}, {0, 3 * page}, {7, 7}} {
		if err := Msync(m[r[0]:r[1]]); err != nil {
			t.Fatalf("Msync(m[%d:%d]): %v", r[0], r[1], err)
		}
	}
	got := make([]byte, 15)
	if _, err := f.ReadAt(got, int64(page-3)); err != nil || string(got) != "spans two pages" {
		t.Fatalf("file holds %q (%v) after msync, want %q", got, err, "spans two pages")
	}
}

// Ensure that Msync of memory that is no longer mapped reports ENOMEM
// instead of succeeding silently.
func TestMsync_unmapped(t *testing.T) {
	m, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(m); err != nil {
		t.Fatal(err)
	}
	if err := Msync(m[10:20]); !errors.Is(err, unix.ENOMEM) {
		t.Fatalf("Msync of an unmapped range: got %v, want ENOMEM", err)
	}
}
