package rawsys_test

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/rawsys"
)

// Ensure that each call moves the bytes it names, at its offset, and
// returns the errno of a failure rather than a count.
func TestCalls(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if n, e := rawsys.Write(fd, []byte("hello, ")); n != 7 || e != 0 {
		t.Fatalf("Write: %d, %v", n, e)
	}
	if n, e := rawsys.Pwrite(fd, []byte("world"), 7); n != 5 || e != 0 {
		t.Fatalf("Pwrite: %d, %v", n, e)
	}
	got := make([]byte, 5)
	if n, e := rawsys.Pread(fd, got, 7); n != 5 || e != 0 || string(got) != "world" {
		t.Fatalf("Pread at 7: %d, %v, %q", n, e, got)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	all := make([]byte, 32)
	if n, e := rawsys.Read(fd, all); e != 0 || !bytes.Equal(all[:n], []byte("hello, world")) {
		t.Fatalf("Read: %d, %v, %q", n, e, all[:n])
	}
	if n, e := rawsys.Pread(fd, got, 100); n != 0 || e != 0 {
		t.Errorf("Pread past the end: %d, %v; want 0 bytes, no error", n, e)
	}
	if n, e := rawsys.Read(-1, got); e != syscall.EBADF {
		t.Errorf("Read of fd -1: %d, %v; want EBADF", n, e)
	}
	if n, e := rawsys.Pwrite(fd, nil, 0); n != 0 || e != 0 {
		t.Errorf("Pwrite of nothing: %d, %v", n, e)
	}
}
