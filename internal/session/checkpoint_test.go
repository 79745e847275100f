package session_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/checkpoint"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
)

// TestCheckpoint_Streaming checkpoints a volume (internal/checkpoint)
// that a client maps and stores to without pause, through the real fault
// path: each checkpoint must be a prefix of the client's stores (its
// cut), later ones later, and once the writer stops a checkpoint must
// equal the volume. Stores missed by dirty tracking (a mapping left
// unprotected after a cut) leave stale pages that break the prefix.
func TestCheckpoint_Streaming(t *testing.T) {
	r := newRig(t, "mem")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	im, err := image.Create(filepath.Join(t.TempDir(), "vol.img"), volSize, 16<<10, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	v, err := checkpoint.Start(checkpoint.Config{Device: vol, Image: im, BufferBytes: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	readImage := func() []byte {
		b := make([]byte, volSize)
		if _, err := im.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		return b
	}
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	c.Do("stream")
	var last uint64
	for i := range 6 {
		waitStreams(t, vol, volSize, []uint64{last})
		cp, err := v.Checkpoint(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		j := checkPrefix(t, fmt.Sprintf("checkpoint %d", cp.Seq), readImage())
		if i > 0 && j <= last {
			t.Fatalf("checkpoint %d cut at write %d, not after the one before (%d)", cp.Seq, j, last)
		}
		last = j
	}
	c.Do("stop")
	cp, err := v.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if img := readImage(); !bytes.Equal(img, readAll(t, vol)) {
		t.Fatalf("checkpoint %d, taken with the writer stopped, differs from the volume", cp.Seq)
	}
	st := v.Status()
	t.Logf("%d checkpoints, %d chunks written, %d saved by the writer's faults, %d backpressure waits; faults %d, sweeps %d",
		st.Checkpoints, st.WrittenChunks, st.BufferedChunks, st.BackpressureWaits, r.srv.Stats().Faults.Load(), r.srv.Stats().Sweeps.Load())
	c.Do("unmap")
	c.Do("quit")
}
