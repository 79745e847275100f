package checkpoint_test

import (
	"bytes"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/checkpoint"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Ensure that a checkpoint of the whole volume (the first after Start)
// reads a tmpfs memory through its file and leaves the daemon's own
// mapping of it untouched: a load through that mapping first maps each
// page (8-16 µs per 4 KiB page on the development VM), which held the
// first checkpoint to a third of the disk's speed. A later checkpoint,
// of a few chunks, reads them through the mapping, which is faster once
// mapped.
func TestCheckpoint_wholeVolumeReadsThroughTheFile(t *testing.T) {
	const size, chunk = 4 << 20, 64 << 10
	r := newRig(t, size, chunk, t.TempDir())
	for c := int64(0); c < size/chunk; c += 3 {
		r.store(c*chunk+17, []byte("before the first checkpoint"))
	}
	exts, err := r.dev.Extents(0, size)
	if err != nil || len(exts) != 1 {
		t.Fatalf("extents: %v, %v", exts, err)
	}
	daemon, err := exts[0].Source.(backing.DirectAccesser).DirectAccess(exts[0].SourceOff, size)
	if err != nil {
		t.Fatal(err)
	}
	v := r.start(checkpoint.Config{}, checkpoint.Hooks{})
	if _, err := v.Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	if d := diff(r.image(), r.mem, chunk); d != "" {
		t.Fatalf("first checkpoint: %s", d)
	}
	for off := int64(0); off < size; off += 4096 {
		if testutil.PageMapped(t, daemon[off:]) {
			t.Fatalf("the first checkpoint mapped page %d of the volume into the daemon: it read through the mapping, not the file", off/4096)
		}
	}

	r.store(5*chunk, []byte("after"))
	if _, err := v.Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.image(), r.mem) {
		t.Fatal("the second checkpoint is not the memory")
	}
	if !testutil.PageMapped(t, daemon[5*chunk:]) {
		t.Error("a later checkpoint did not read its chunk through the daemon's mapping")
	}
}
