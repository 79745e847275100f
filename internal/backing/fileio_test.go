package backing_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// openTmpfs opens a tmpfs memory file of size random bytes, which it
// returns too, and closes it when t ends.
func openTmpfs(t *testing.T, size int64) (path string, file []byte, dev backing.Device) {
	t.Helper()
	path = tmpfsFile(t, size)
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dev, err = backing.Open(path, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return path, file, dev
}

// Ensure that ReadFileAt and WriteFileAt on a tmpfs memory file move the
// bytes the mapping holds without mapping their pages into the daemon,
// where ReadAt does (the first access to a page of the mapping is a page
// fault: 8-16 µs on a VM with shadow page tables), within the device
// only, and that a read-only device reads so but refuses a write.
func TestMemory_fileIOLeavesMappingUntouched(t *testing.T) {
	const page = 4096
	path, file, dev := openTmpfs(t, 1<<20)
	mem, err := dev.(backing.DirectAccesser).DirectAccess(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}

	got := make([]byte, page)
	if _, err := dev.(backing.FileReader).ReadFileAt(got, 100*page); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, file[100*page:101*page]) {
		t.Error("ReadFileAt did not read the file's bytes")
	}
	p := bytes.Repeat([]byte("first!"), 1000)
	if n, err := dev.(backing.FileWriter).WriteFileAt(p, 150*page+7); err != nil || n != len(p) {
		t.Fatalf("WriteFileAt: %d, %v", n, err)
	}
	if testutil.PageMapped(t, mem[100*page:]) || testutil.PageMapped(t, mem[150*page:]) {
		t.Error("ReadFileAt or WriteFileAt mapped their pages into the daemon")
	}
	if _, err := dev.ReadAt(got, 150*page); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[7:], p[:page-7]) {
		t.Error("the mapping does not read what WriteFileAt wrote")
	}
	if !testutil.PageMapped(t, mem[150*page:]) {
		t.Fatal("ReadAt left its page unmapped: /proc/self/pagemap shows no present pages here")
	}

	ro, err := backing.Open(path, backing.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.(backing.FileReader).ReadFileAt(got, 100*page); err != nil || !bytes.Equal(got, file[100*page:101*page]) {
		t.Errorf("ReadFileAt of a read-only device: %v", err)
	}
	if _, err := ro.(backing.FileWriter).WriteFileAt(p, 0); err == nil {
		t.Error("a read-only device took a file write")
	}
	if _, err := dev.(backing.FileReader).ReadFileAt(got, 1<<20-10); err == nil {
		t.Error("ReadFileAt past the end succeeded")
	}
	if _, err := dev.(backing.FileWriter).WriteFileAt(p, 1<<20-10); !errors.Is(err, backing.ErrOutOfRange) {
		t.Errorf("WriteFileAt past the end: %v, want ErrOutOfRange", err)
	}
	// The file truncated under the device: a read of what is gone says so
	// and what to do, where a load through the mapping would fault.
	if err := os.Truncate(path, 1<<19); err != nil {
		t.Fatal(err)
	}
	_, err = dev.(backing.FileReader).ReadFileAt(got, 3<<18)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "grow it back") {
		t.Errorf("ReadFileAt past a truncation: %v, want io.ErrUnexpectedEOF saying what to do", err)
	}
}

// Ensure that a tmpfs file in 2 MiB pages (huge=always) is written
// through the mapping, whose first store maps the whole huge page with
// one fault (0.7 against 4.2 µs per 4 KiB copied out and overwritten on
// the development VM), and still read with pread, which allocates no
// page for a hole; a tmpfs file in small pages keeps writing with pwrite.
func TestMemory_hugeTmpfsWritesThroughMapping(t *testing.T) {
	const page, huge = 4096, 2 << 20
	path := filepath.Join(testutil.Tmpfs(t, "huge=always,size=8m"), "vol")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 2*huge); err != nil {
		t.Fatal(err)
	}
	dev, err := backing.Open(path, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if backing.FileWrites(dev) {
		t.Fatal("a tmpfs file in huge pages is written with pwrite: FileWrites is true")
	}
	mem, err := dev.(backing.DirectAccesser).DirectAccess(0, 2*huge)
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte("huge"), page/4)
	if _, err := dev.(backing.FileWriter).WriteFileAt(p, 10*page); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem[10*page:11*page], p) {
		t.Error("the mapping does not hold what WriteFileAt wrote")
	}
	if !testutil.PageMapped(t, mem[300*page:]) {
		t.Error("a store through the mapping left the rest of its huge page unmapped: is the file in huge pages?")
	}
	got := make([]byte, page)
	if _, err := dev.(backing.FileReader).ReadFileAt(got, huge+page); err != nil || !bytes.Equal(got, make([]byte, page)) {
		t.Fatalf("ReadFileAt of a hole: %v", err)
	}
	if data, _, err := dev.(backing.HoleFinder).Allocated(huge, huge); err != nil || data {
		t.Errorf("ReadFileAt of a hole allocated it (data %v, %v)", data, err)
	}

	_, _, small := openTmpfs(t, 1<<20)
	if !backing.FileWrites(small) {
		t.Error("a tmpfs file in small pages is not written with pwrite: FileWrites is false")
	}
}
