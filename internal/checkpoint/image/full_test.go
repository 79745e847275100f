package image_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"golang.org/x/sys/unix"
)

// fullDev is a Dev on a file system that has room up to limit bytes:
// writes that reach past it fail with ENOSPC, as a file growing on a full
// disk does.
type fullDev struct {
	image.Dev
	limit atomic.Int64
}

func (d *fullDev) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > d.limit.Load() {
		return 0, &os.PathError{Op: "write", Path: "journal", Err: unix.ENOSPC}
	}
	return d.Dev.WriteAt(p, off)
}

// fill commits checkpoint seq with every chunk, returning its contents.
func fill(t *testing.T, im *image.Image, seq uint64) ([]byte, error) {
	t.Helper()
	want := make([]byte, im.Size())
	txn, err := im.Begin(seq)
	if err != nil {
		t.Fatal(err)
	}
	for c := int64(0); c*im.Chunk() < im.Size(); c++ {
		p := chunkData(seq, c, min(im.Chunk(), im.Size()-c*im.Chunk()))
		copy(want[c*im.Chunk():], p)
		if err := txn.Put(c, p); err != nil {
			txn.Abort()
			return nil, err
		}
	}
	if _, err := txn.Commit(time.Unix(int64(seq), 0)); err != nil {
		txn.Abort()
		return nil, err
	}
	return want, nil
}

// Ensure that a journal that meets a full disk fails the checkpoint being
// written and leaves the previous one intact, before and after a reopen,
// and that checkpoints succeed again once there is room.
func TestFullDisk(t *testing.T) {
	const size, chunk = 64 * 4096, 4096
	d := newDevs(size, 1<<20)
	j := &fullDev{Dev: d.jnl}
	j.limit.Store(1 << 20)
	opt := image.Options{SegmentBytes: 8 * chunk}
	im, err := image.CreateOn(d.img, j, size, chunk, opt)
	if err != nil {
		t.Fatal(err)
	}
	first, err := fill(t, im, 1)
	if err != nil {
		t.Fatal(err)
	}
	j.limit.Store(image.DataStart + size/2) // room for half a checkpoint
	if _, err := fill(t, im, 2); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("checkpoint 2 on a full disk: %v, want ENOSPC", err)
	}
	check := func(when string) {
		if cp := im.Last(); cp.Seq != 1 {
			t.Fatalf("%s: Last() = %+v, want checkpoint 1", when, cp)
		}
		if !bytes.Equal(readAll(t, im), first) {
			t.Fatalf("%s: the image is not checkpoint 1", when)
		}
	}
	check("after the failed checkpoint")
	// A failed Commit ends the Txn: no Abort is needed to begin again.
	txn, err := im.Begin(2)
	if err != nil {
		t.Fatal(err)
	}
	for c := int64(0); c < size/chunk; c++ {
		if txn.Put(c, chunkData(2, c, chunk)) != nil {
			break
		}
	}
	if _, err := txn.Commit(time.Unix(2, 0)); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Commit after a Put met a full disk: %v, want ENOSPC", err)
	}
	check("after the failed commit")
	if txn, err = im.Begin(2); err != nil {
		t.Fatalf("Begin after a failed Commit: %v", err)
	}
	txn.Abort()
	im.Close()
	if im, err = image.OpenOn(d.img, j, opt); err != nil {
		t.Fatal(err)
	}
	check("reopened")
	j.limit.Store(1 << 20)
	second, err := fill(t, im, 2)
	if err != nil {
		t.Fatalf("checkpoint 2 with room again: %v", err)
	}
	if !bytes.Equal(readAll(t, im), second) {
		t.Fatal("the image is not checkpoint 2")
	}
	im.Close()
}

// Ensure that the same holds for real files on a full tmpfs (root only:
// it mounts one).
func TestFullDiskTmpfs(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	const size, chunk = 640 << 10, 64 << 10
	path := dir + "/vol.img"
	im, err := image.Create(path, size, chunk, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ok, why := im.Direct()
	t.Logf("O_DIRECT: %v %s", ok, why)
	// The image takes 640 KiB of the 1 MiB; a full checkpoint does not
	// fit in the journal beside it.
	txn, err := im.Begin(1)
	if err != nil {
		t.Fatal(err)
	}
	p := chunkData(1, 0, chunk)
	if err := txn.Put(0, p); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Commit(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want, p)
	if _, err := fill(t, im, 2); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("checkpoint 2 on a full tmpfs: %v, want ENOSPC", err)
	}
	if cp := im.Last(); cp.Seq != 1 || !bytes.Equal(readAll(t, im), want) {
		t.Fatalf("after the failed checkpoint: Last() = %+v, or the image is not checkpoint 1", cp)
	}
	im.Close()
	if im, err = image.Open(path, image.Options{}); err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if cp := im.Last(); cp.Seq != 1 || !bytes.Equal(readAll(t, im), want) {
		t.Fatalf("reopened: Last() = %+v, or the image is not checkpoint 1", cp)
	}
}
