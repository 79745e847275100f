package checkpoint_test

import (
	"bytes"
	"os"
	"slices"
	"sync/atomic"
	"testing"

	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/checkpoint"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
)

// TestModel checks the engine against a reference model: random block
// writes, write-zeroes and direct stores (through the fault path's
// order) interleaved with checkpoints, some of them with writes made
// while the checkpoint is written back, and Persist calls. Every
// committed checkpoint's image equals the model's state at its cut, and
// after Persist the image holds every write made before it.
func TestModel(t *testing.T) {
	requireShm(t)
	imgDir := t.TempDir()
	rapid.Check(t, func(rt *rapid.T) { checkModel(rt, imgDir, false) })
}

// checkModel runs one random history; skipSave breaks the engine (writers
// do not save chunks the checkpoint under way still needs).
func checkModel(rt *rapid.T, imgDir string, skipSave bool) {
	const size, chunk = 128 << 10, 8 << 10
	dir, err := os.MkdirTemp(imgDir, "")
	if err != nil {
		rt.Fatalf("%v", err)
	}
	r := newRig(rt, size, chunk, dir)
	var pauseAt atomic.Int64 // pause the write-back after this many Puts (0: never)
	paused, resume, stopped := make(chan struct{}), make(chan struct{}), make(chan struct{})
	v := r.start(checkpoint.Config{BufferBytes: size}, checkpoint.Hooks{
		SkipSave: skipSave,
		AfterPut: func(_ uint64, written int64) {
			if pauseAt.CompareAndSwap(written, 0) {
				select {
				case paused <- struct{}{}:
					select {
					case <-resume:
					case <-stopped:
					}
				case <-stopped:
				}
			}
		},
	})
	// Before v.Close (cleanups run last first): a run that stops while
	// the write-back is paused (a failure, or rapid's own end) lets it go.
	rt.Cleanup(func() { close(stopped) })
	model := make([]byte, size)
	var seq uint64
	change := func(label string) {
		off := rapid.Int64Range(0, size-1).Draw(rt, label+"-off")
		n := rapid.Int64Range(1, min(3*chunk, size-off)).Draw(rt, label+"-len")
		p := fill(int(n), int(rapid.IntRange(1, 1000).Draw(rt, label+"-tag")))
		switch rapid.IntRange(0, 2).Draw(rt, label+"-how") {
		case 0:
			r.write(off, p)
		case 1:
			r.store(off, p)
		case 2:
			if err := r.dev.WriteZeroes(off, n); err != nil {
				rt.Fatalf("write zeroes: %v", err)
			}
			clear(p)
		}
		copy(model[off:], p)
	}
	check := func(what string, cp image.Checkpoint, want []byte) {
		seq++
		if cp.Seq != seq {
			rt.Fatalf("%s: checkpoint %d, want %d", what, cp.Seq, seq)
		}
		if d := diff(r.image(), want, chunk); d != "" {
			rt.Fatalf("%s: checkpoint %d's image is not the cut: %s", what, cp.Seq, d)
		}
	}
	for range rapid.IntRange(1, 40).Draw(rt, "steps") {
		switch rapid.IntRange(0, 5).Draw(rt, "op") {
		case 0, 1, 2:
			change("write")
		case 3:
			want := slices.Clone(model)
			cp, err := v.Checkpoint(bg)
			if err != nil {
				rt.Fatalf("checkpoint: %v", err)
			}
			check("checkpoint", cp, want)
		case 4:
			// Writes while the checkpoint is written back, after j Puts.
			want := slices.Clone(model)
			pauseAt.Store(int64(rapid.IntRange(1, int(size/chunk)).Draw(rt, "pause-after")))
			type result struct {
				cp  image.Checkpoint
				err error
			}
			done := make(chan result, 1)
			go func() {
				cp, err := v.Checkpoint(bg)
				done <- result{cp, err}
			}()
			var res result
			select {
			case <-paused:
				for range rapid.IntRange(1, 6).Draw(rt, "writes-during") {
					change("during")
				}
				resume <- struct{}{}
				res = <-done
			case res = <-done: // fewer chunks than j to write
				pauseAt.Store(0)
			}
			if res.err != nil {
				rt.Fatalf("checkpoint: %v", res.err)
			}
			check("checkpoint with writes during its write-back", res.cp, want)
		case 5:
			if err := v.Persist(bg); err != nil {
				rt.Fatalf("persist: %v", err)
			}
			if last := r.im.Last().Seq; last != seq {
				seq++ // Persist took one
				if last != seq {
					rt.Fatalf("persist: the image is at checkpoint %d, want %d or %d", last, seq-1, seq)
				}
			}
			if got := r.image(); !bytes.Equal(got, model) {
				rt.Fatalf("after persist the image lacks writes made before it: %s", diff(got, model, chunk))
			}
		}
	}
}
