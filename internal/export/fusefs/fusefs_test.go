package fusefs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
	"golang.org/x/sys/unix"
)

// Ensure that a device file reads and writes the device, as a file at
// its end: reads stop short, writes past it fail with ENOSPC.
func TestFile_readWrite(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	dev := r.create("vol", "0 8192 linear a 0", false)
	f := r.open("vol", os.O_RDWR)

	data := bytes.Repeat([]byte("daxsnap!"), 128<<10) // 1 MiB, spans requests
	if n, err := f.WriteAt(data, 12345); err != nil || n != len(data) {
		t.Fatalf("write: %d, %v", n, err)
	}
	if !bytes.Equal(r.get(12345, len(data)), data) {
		t.Fatal("written data not on the backing device")
	}
	got := make([]byte, len(data))
	if n, err := f.ReadAt(got, 12345); err != nil || n != len(data) || !bytes.Equal(got, data) {
		t.Fatalf("read back: %d, %v, equal %v", n, err, bytes.Equal(got, data))
	}
	r.put(4*mib-100, []byte("tail"))
	buf := make([]byte, 4096)
	if n, err := f.ReadAt(buf, 4*mib-100); n != 100 || err != io.EOF || string(buf[:4]) != "tail" {
		t.Errorf("read across the end: %d, %v, %q", n, err, buf[:4])
	}
	if n, err := f.ReadAt(buf, 4*mib); n != 0 || err != io.EOF {
		t.Errorf("read at the end: %d, %v", n, err)
	}
	if n, err := unix.Pwrite(int(f.Fd()), buf, 4*mib-512); n != 512 || err != nil {
		t.Errorf("write across the end: %d, %v; want a short write of 512 bytes", n, err)
	}
	_, err := unix.Pwrite(int(f.Fd()), buf, 4*mib)
	wantErrno(t, "write at the end", err, syscall.ENOSPC)
	if err := f.Sync(); err != nil {
		t.Errorf("fsync: %v", err)
	}
	if r.a.Flushes.Load() == 0 {
		t.Error("fsync did not flush the device")
	}
	if got := dev.Info().OpenCount; got != 1 {
		t.Errorf("open count with the file open = %d, want 1", got)
	}
}

// Ensure that a device file looks like /dev/mapper/NAME: its size, its
// owner and mode, read-only when the device is.
func TestFile_attributes(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	r.create("vol", "0 8192 linear a 0", false)
	r.create("ro", "0 4096 linear b 0", true)
	r.create("empty", "", false)
	for _, tc := range []struct {
		name string
		size int64
		mode os.FileMode
	}{{"vol", 4 * mib, 0o600}, {"ro", 2 * mib, 0o400}, {"empty", 0, 0o600}} {
		fi, err := os.Stat(r.path(tc.name))
		if err != nil {
			t.Fatalf("stat %s: %v", tc.name, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Size() != tc.size || fi.Mode() != tc.mode || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: size %d mode %v uid %d gid %d, want %d %v 0 0", tc.name, fi.Size(), fi.Mode(), st.Uid, st.Gid, tc.size, tc.mode)
		}
	}
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"empty", "ro", "vol"}) {
		t.Errorf("readdir = %v", names)
	}
	if fi, err := os.Stat(r.dir); err != nil || fi.Mode() != os.ModeDir|0o755 {
		t.Errorf("mount point: %v, %v", fi.Mode(), err)
	}
}

// Ensure that what a file cannot do fails with the errno a block
// device gives: read-only opens for writing, resizing, chmod, I/O on a
// device with no table or an error table.
func TestFile_refusals(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	r.create("vol", "0 8192 linear a 0", false)
	r.create("ro", "0 4096 linear b 0", true)
	r.create("empty", "", false)
	r.create("bad", "0 2048 error", false)

	_, err := os.OpenFile(r.path("ro"), os.O_RDWR, 0)
	wantErrno(t, "open read-only device for writing", err, syscall.EROFS)
	r.open("ro", os.O_RDONLY)
	_, err = os.Open(r.path("empty"))
	wantErrno(t, "open a device with no table", err, syscall.ENXIO)
	_, err = os.Open(r.path("nosuch"))
	wantErrno(t, "open a missing device", err, syscall.ENOENT)

	wantErrno(t, "truncate", os.Truncate(r.path("vol"), mib), syscall.EINVAL)
	if err := os.Truncate(r.path("vol"), 4*mib); err != nil {
		t.Errorf("truncate to the same size: %v", err)
	}
	wantErrno(t, "chmod", os.Chmod(r.path("vol"), 0o666), syscall.EPERM)
	wantErrno(t, "create", os.WriteFile(r.path("new"), nil, 0o600), syscall.EPERM)
	wantErrno(t, "unlink", os.Remove(r.path("vol")), syscall.EPERM)
	wantErrno(t, "rename", os.Rename(r.path("vol"), r.path("x")), syscall.EPERM)
	wantErrno(t, "mkdir", os.Mkdir(r.path("d"), 0o700), syscall.EPERM)

	// O_TRUNC is ignored, as on a block device.
	r.put(0, []byte("keep"))
	f := r.open("vol", os.O_WRONLY|os.O_TRUNC)
	if fi, _ := f.Stat(); fi.Size() != 4*mib || string(r.get(0, 4)) != "keep" {
		t.Errorf("O_TRUNC changed the device: size %d, data %q", fi.Size(), r.get(0, 4))
	}

	bad := r.open("bad", os.O_RDWR)
	_, err = bad.ReadAt(make([]byte, 512), 0)
	wantErrno(t, "read of an error target", err, syscall.EIO)
	_, err = bad.WriteAt(make([]byte, 512), 0)
	wantErrno(t, "write of an error target", err, syscall.EIO)
}

// Ensure that fallocate punches and zeroes ranges (reading back as
// zeroes), clips with KEEP_SIZE, refuses growth and other modes.
func TestFile_fallocate(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	r.create("vol", "0 8192 linear a 0", false)
	f := r.open("vol", os.O_RDWR)
	fd := int(f.Fd())
	fill := func() { r.put(0, bytes.Repeat([]byte{0xaa}, 4*mib)) }
	zeroed := func(off, n int) bool { return bytes.Count(r.get(int64(off), n), []byte{0}) == n }

	fill()
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, 8192); err != nil {
		t.Fatalf("punch hole: %v", err)
	}
	if !zeroed(4096, 8192) || r.get(4095, 1)[0] != 0xaa || r.get(4096+8192, 1)[0] != 0xaa {
		t.Error("punch hole did not zero exactly its range")
	}
	fill()
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 100, 1000); err != nil {
		t.Fatalf("zero range: %v", err)
	}
	if !zeroed(100, 1000) || r.get(99, 1)[0] != 0xaa || r.get(1100, 1)[0] != 0xaa {
		t.Error("zero range did not zero exactly its range")
	}
	fill()
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, 4*mib-512, 4096); err != nil {
		t.Errorf("zero range across the end with KEEP_SIZE: %v", err)
	}
	if !zeroed(4*mib-512, 512) {
		t.Error("KEEP_SIZE zero range across the end did not zero the tail")
	}
	wantErrno(t, "zero range across the end", unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 4*mib-512, 4096), syscall.EINVAL)
	wantErrno(t, "punch hole past the end", unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4*mib, 4096), syscall.EINVAL)
	wantErrno(t, "allocate", unix.Fallocate(fd, 0, 0, 4096), syscall.EOPNOTSUPP)
	wantErrno(t, "collapse range", unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 0, 4096), syscall.EOPNOTSUPP)
	// A refused mode must not turn fallocate off for the mount.
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 512); err != nil {
		t.Errorf("punch hole after refusals: %v", err)
	}
}

// Ensure that an open file holds the device open, so removal is busy,
// and that the kernel's release lets it go.
func TestFile_openCount(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	dev := r.create("vol", "0 8192 linear a 0", false)
	f, err := os.Open(r.path("vol"))
	if err != nil {
		t.Fatal(err)
	}
	waitOpenCount(t, dev, 1)
	if err := r.m.Remove("vol", dm.RemoveOptions{}); !errors.Is(err, dm.ErrBusy) {
		t.Fatalf("remove of an open device: %v, want busy", err)
	}
	f.Close()
	waitOpenCount(t, dev, 0)
	if err := r.m.Remove("vol", dm.RemoveOptions{}); err != nil {
		t.Fatalf("remove after close: %v", err)
	}
}

// Ensure that I/O on a suspended device waits for the resume, as block
// I/O does, instead of failing.
func TestFile_suspendWaits(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	dev := r.create("vol", "0 8192 linear a 0", false)
	f := r.open("vol", os.O_RDWR)
	if err := dev.Suspend(dm.SuspendOptions{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.WriteAt([]byte("after resume"), 0)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("write on a suspended device returned (%v) before the resume", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := dev.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write after resume: %v", err)
	}
	if string(r.get(0, 12)) != "after resume" {
		t.Error("the held write did not land")
	}
}

// Ensure that devices created, removed, renamed and resized after the
// mount show at once.
func TestMount_followsDevices(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	if _, err := os.Stat(r.path("vol")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat before create: %v", err)
	}
	dev := r.create("vol", "0 4096 linear a 0", false)
	fi, err := os.Stat(r.path("vol"))
	if err != nil || fi.Size() != 2*mib {
		t.Fatalf("stat after create: %v, %v", fi, err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino

	if err := dev.Load("0 8192 linear a 0"); err != nil {
		t.Fatal(err)
	}
	if err := dev.Suspend(dm.SuspendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dev.Resume(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(r.path("vol")); err != nil || fi.Size() != 4*mib {
		t.Fatalf("stat after resize: %v, %v", fi, err)
	}

	if err := r.m.Rename("vol", "renamed"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.path("vol")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old name after rename: %v", err)
	}
	fi, err = os.Stat(r.path("renamed"))
	if err != nil || fi.Sys().(*syscall.Stat_t).Ino != ino {
		t.Errorf("new name after rename: %v (inode %v, was %d)", err, fi, ino)
	}

	if err := r.m.Remove("renamed", dm.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.path("renamed")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat after remove: %v", err)
	}
	r.create("renamed", "0 2048 zero", false)
	fi, err = os.Stat(r.path("renamed"))
	if err != nil || fi.Size() != mib || fi.Sys().(*syscall.Stat_t).Ino == ino {
		t.Errorf("a new device under an old name: %v, %v (must be a new inode)", fi, err)
	}
}

// Ensure that closing the mount with a file still open (a loop device
// left attached) does not hang, reports it, and lets the device go.
func TestMount_closeWithOpenFile(t *testing.T) {
	r := newRig(t, fusefs.Options{})
	dev := r.create("vol", "0 8192 linear a 0", false)
	f := r.open("vol", os.O_RDWR)
	waitOpenCount(t, dev, 1)
	r.closed = true
	if err := r.srv.Close(); err == nil {
		t.Error("close with an open file reported nothing")
	}
	if got := dev.Info().OpenCount; got != 0 {
		t.Errorf("open count after close = %d, want 0", got)
	}
	if _, err := f.ReadAt(make([]byte, 512), 0); err == nil {
		t.Error("read on the aborted mount succeeded")
	}
	if _, err := os.Stat(r.path("vol")); err == nil {
		t.Error("the mount is still there after close")
	}
}

// TestMount_forgetsRemovedDevices: the mount keeps an inode number for
// each device it showed, and drops it when the device is removed, even
// with no watcher polling the devices, so devices that come and go all
// day are not pinned by the mount.
func TestMount_forgetsRemovedDevices(t *testing.T) {
	const devices = 8
	r := newRig(t, fusefs.Options{Poll: -1})
	r.create("keep", "0 2048 zero", false)
	if _, err := os.Stat(r.path("keep")); err != nil {
		t.Fatal(err)
	}
	for i := range devices {
		name := fmt.Sprintf("vol%d", i)
		r.create(name, "0 2048 zero", false)
		if _, err := os.Stat(r.path(name)); err != nil {
			t.Fatal(err)
		}
		if err := r.m.Remove(name, dm.RemoveOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := fusefs.Inodes(r.srv); n != 1 {
		t.Errorf("the mount keeps inode numbers for %d devices after %d were shown and removed, want 1 (keep)", n, devices)
	}
}
