package image_test

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Ensure that an image on a block device (a loop device) needs its
// journal named, is zeroed at creation, and holds its checkpoints raw
// across a reopen (root only: it attaches a loop device).
func TestBlockDevice(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	backing := dir + "/disk"
	junk := bytes.Repeat([]byte{0xa5}, 8<<20)
	if err := os.WriteFile(backing, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	dev := testutil.AttachLoop(t, backing).Dev
	const size, chunk = 4 << 20, 64 << 10
	if _, err := image.Create(dev, size, chunk, image.Options{}); err == nil || !strings.Contains(err.Error(), "journal") {
		t.Fatalf("Create on a block device without a journal path: %v, want an error asking for one", err)
	}
	opt := image.Options{JournalPath: dir + "/vol.journal"}
	im, err := image.Create(dev, size, chunk, opt)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	if !bytes.Equal(readAll(t, im), want) {
		t.Fatal("a new image on a block device does not read as zeroes")
	}
	txn, err := im.Begin(1)
	if err != nil {
		t.Fatal(err)
	}
	for c := int64(1); c < size/chunk; c += 5 {
		p := chunkData(1, c, chunk)
		copy(want[c*chunk:], p)
		if err := txn.Put(c, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := txn.Commit(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if im, err = image.Open(dev, opt); err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.Last().Seq != 1 || !bytes.Equal(readAll(t, im), want) {
		t.Fatalf("reopened: Last() = %+v, or the device does not hold checkpoint 1", im.Last())
	}
	raw, err := os.ReadFile(backing)
	if err != nil || !bytes.Equal(raw[:size], want) || !bytes.Equal(raw[size:], junk[size:]) {
		t.Fatalf("the loop device's file is not checkpoint 1 then its old bytes (%v)", err)
	}
	if rep, err := image.Inspect(dev, opt); err != nil || rep.Last.Seq != 1 || rep.Applied != 1 {
		t.Fatalf("Inspect: %+v, %v", rep, err)
	}
}
