package backing_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Ensure that what daxsnap cannot use is refused with an error that says
// what the path is and what daxsnap accepts.
func TestOpen_rejects(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	emptyDisk := filepath.Join(dir, "empty")
	writeFile(t, emptyDisk, 0)
	emptyMem := tmpfsFile(t, 0)
	cases := []struct {
		path   string
		is     error
		saying []string
	}{
		{dir, backing.ErrUnsupported, []string{"a directory", "daxsnap accepts"}},
		{fifo, backing.ErrUnsupported, []string{"a named pipe", "daxsnap accepts"}},
		{sock, backing.ErrUnsupported, []string{"a unix socket", "daxsnap accepts"}},
		{"/dev/null", backing.ErrUnsupported, []string{"not a device-dax instance", "daxsnap accepts"}},
		{filepath.Join(dir, "missing"), fs.ErrNotExist, []string{"no such file", "daxsnap accepts"}},
		{emptyDisk, nil, []string{"empty", "truncate"}},
		{emptyMem, nil, []string{"tmpfs file is empty", "truncate"}},
		{"4095:1048575", nil, []string{"no such device", "lsblk"}},
		{"7:99999999999", nil, []string{"not major:minor"}},
	}
	for _, c := range cases {
		dev, err := backing.Open(c.path, backing.Options{})
		if err == nil {
			dev.Close()
			t.Errorf("Open(%s) succeeded", c.path)
			continue
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("Open(%s): %v, want an error wrapping %v", c.path, err, c.is)
		}
		for _, s := range append(c.saying, c.path) {
			if c.path == "7:99999999999" && s == c.path {
				continue
			}
			if !strings.Contains(err.Error(), s) {
				t.Errorf("Open(%s): error %q does not say %q", c.path, err, s)
			}
		}
	}
}

// Ensure that a block device named major:minor is the device at its node:
// same path in messages, same identity.
func TestOpen_majorMinor(t *testing.T) {
	node := loopDevice(t, testSize, 0)
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		t.Fatal(err)
	}
	byNum, err := backing.Open(fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer byNum.Close()
	link := filepath.Join(t.TempDir(), "disk")
	if err := os.Symlink(node, link); err != nil {
		t.Fatal(err)
	}
	byLink, err := backing.Open(link, backing.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer byLink.Close()
	if byNum.Path() != node || byNum.Kind() != backing.KindBlock || byNum.Size() != testSize {
		t.Errorf("major:minor opened %s (%v, %d bytes), want %s (block device, %d bytes)", byNum.Path(), byNum.Kind(), byNum.Size(), node, testSize)
	}
	if byNum.ID() != byLink.ID() {
		t.Errorf("ID by number %+v differs from ID through a symlink %+v", byNum.ID(), byLink.ID())
	}
	// Both opens see one disk.
	if _, err := byNum.WriteAt([]byte("same disk"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := byNum.Flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 9)
	if _, err := byLink.ReadAt(got, 4096); err != nil || string(got) != "same disk" {
		t.Errorf("read through the symlink: %q, %v", got, err)
	}
}

// Ensure that two names for one file have one ID and other files another.
func TestOpen_identity(t *testing.T) {
	path := tmpfsFile(t, 8192)
	hard := path + ".hard"
	if err := os.Link(path, hard); err != nil {
		t.Fatal(err)
	}
	other := tmpfsFile(t, 8192)
	ids := map[string]backing.ID{}
	for _, p := range []string{path, hard, other} {
		dev, err := backing.Open(p, backing.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		ids[p] = dev.ID()
		dev.Close()
	}
	if ids[path] != ids[hard] || ids[path] == ids[other] {
		t.Errorf("IDs: file %+v, hard link %+v, other file %+v", ids[path], ids[hard], ids[other])
	}
}

// Ensure the exact read-only message, for every kind of device.
func TestOpen_readOnlyMessage(t *testing.T) {
	for _, path := range []string{tmpfsFile(t, 8192), diskFile(t, 8192)} {
		dev, err := backing.Open(path, backing.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = dev.WriteAt([]byte{1}, 0)
		if want := path + " is opened read-only: " + syscall.EROFS.Error(); err == nil || err.Error() != want || !errors.Is(err, syscall.EROFS) {
			t.Errorf("WriteAt on read-only %s: %v, want %q", path, err, want)
		}
		dev.Close()
	}
}

// Ensure that a file truncated under an open device gives errors with
// context, not a crash: SIGBUS through a mapping, EOF through pread.
func TestOpen_truncatedUnderDevice(t *testing.T) {
	for _, path := range []string{tmpfsFile(t, 64<<10), diskFile(t, 64<<10)} {
		dev, err := backing.Open(path, backing.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		_, rerr := dev.ReadAt(make([]byte, 100), 40000)
		if rerr == nil || !strings.Contains(rerr.Error(), path) || !strings.Contains(rerr.Error(), "40000") ||
			!(errors.Is(rerr, syscall.EIO) || errors.Is(rerr, io.EOF)) {
			t.Errorf("ReadAt on truncated %s: %v, want EIO or EOF naming the path and offset", path, rerr)
		}
		if dev.Kind() == backing.KindTmpfs {
			if _, err := dev.WriteAt([]byte{1}, 40000); !errors.Is(err, syscall.EIO) {
				t.Errorf("WriteAt through the mapping of truncated %s: %v, want EIO", path, err)
			}
		}
		if err := dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// Ensure that MapFile after Close hands out no descriptor that a new file
// could have reused.
func TestMemory_MapFileAfterClose(t *testing.T) {
	dev, err := backing.Open(tmpfsFile(t, 8192), backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ms := dev.(backing.MappingSource)
	if fd, _ := ms.MapFile(); int(fd) < 0 {
		t.Fatalf("MapFile of an open device: %d", fd)
	}
	dev.Close()
	if fd, _ := ms.MapFile(); fd != ^uintptr(0) {
		t.Fatalf("MapFile after Close: %d, want an invalid descriptor", fd)
	}
}

// Ensure that files of kernel interface file systems (/proc, /sys,
// cgroups) are refused as such, never with a hint to size them with
// truncate, and that a hint naming a path with blanks quotes it.
func TestOpen_kernelFilesAndHints(t *testing.T) {
	for _, path := range []string{"/proc/self/mem", "/proc/self/status", "/sys/kernel/mm/transparent_hugepage/enabled"} {
		if _, err := os.Stat(path); err != nil {
			continue
		}
		dev, err := backing.Open(path, backing.Options{ReadOnly: true})
		if err == nil {
			dev.Close()
			t.Errorf("Open(%s) succeeded", path)
			continue
		}
		if !errors.Is(err, backing.ErrUnsupported) || !strings.Contains(err.Error(), "a kernel interface, not storage") ||
			strings.Contains(err.Error(), "truncate") {
			t.Errorf("Open(%s): %v, want refused as a kernel interface file, with no truncate hint", path, err)
		}
	}
	odd := filepath.Join(t.TempDir(), "it's empty")
	writeFile(t, odd, 0)
	_, err := backing.Open(odd, backing.Options{})
	if want := `truncate -s 1G '` + filepath.Dir(odd) + `/it'\''s empty'`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Open(%q): %v, want a hint containing %s", odd, err, want)
	}
}
