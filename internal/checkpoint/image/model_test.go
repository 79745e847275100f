package image_test

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
	"pgregory.net/rapid"
)

// devs is an image and its journal on crash devices.
type devs struct{ img, jnl *storetest.CrashDev }

func newDevs(size, journal int64) devs {
	return devs{storetest.NewCrashDev("img", size), storetest.NewCrashDev("jnl", journal)}
}

// chunkData is the contents the tests put in chunk c of checkpoint seq:
// distinct for every (seq, chunk), so a mix of checkpoints shows.
func chunkData(seq uint64, c, n int64) []byte {
	p := make([]byte, n)
	var w [8]byte
	binary.LittleEndian.PutUint64(w[:], seq<<32|uint64(c))
	for i := int64(0); i < n; i += 8 {
		copy(p[i:], w[:])
	}
	return p
}

// readAll reads the whole image through im.
func readAll(t interface{ Fatalf(string, ...any) }, im *image.Image) []byte {
	p := make([]byte, im.Size())
	if _, err := im.ReadAt(p, 0); err != nil {
		t.Fatalf("ReadAt: %v", err)
	}
	return p
}

// putVia returns p's contents in the room txn.Buffer gives (how 0: a
// buffer of p's length; 1: of a whole chunk, p's first bytes used; 2:
// one asked for and dropped first, as a caller that found nothing to put
// does), for a Put without a copy.
func putVia(t interface{ Fatal(...any) }, txn *image.Txn, chunk int64, p []byte, how int) []byte {
	ask := int64(len(p))
	if how == 1 {
		ask = chunk
	}
	if how == 2 {
		if _, err := txn.Buffer(ask); err != nil {
			t.Fatal(err)
		}
	}
	b, err := txn.Buffer(ask)
	if err != nil {
		t.Fatal(err)
	}
	return b[:copy(b, p)]
}

// Ensure that Put (of data of its own, or in the room Buffer gave),
// Commit, Abort, reopen and ReadAt agree with a model:
// a byte slice per checkpoint, where Commit applies the chunks put and
// Abort drops them.
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		chunk := int64(4096) << rapid.IntRange(0, 2).Draw(rt, "chunkShift")
		nchunks := rapid.Int64Range(1, 40).Draw(rt, "chunks")
		size := nchunks*chunk - 512*rapid.Int64Range(0, chunk/512-1).Draw(rt, "short")
		opt := image.Options{
			SegmentBytes: chunk * rapid.Int64Range(1, 5).Draw(rt, "segChunks"),
			ApplyCache:   rapid.SampledFrom([]int64{-1, 0, 3 * chunk}).Draw(rt, "applyCache"),
		}
		d := newDevs(size, 8192+2*nchunks*(chunk+8192)+8192)
		im, err := image.CreateOn(d.img, d.jnl, size, chunk, opt)
		if err != nil {
			rt.Fatal(err)
		}
		model := make([]byte, size)
		var last uint64
		for range rapid.IntRange(1, 20).Draw(rt, "ops") {
			switch op := rapid.IntRange(0, 3).Draw(rt, "op"); op {
			case 0, 1: // a checkpoint, committed (0) or aborted (1)
				txn, err := im.Begin(last + 1)
				if err != nil {
					rt.Fatal(err)
				}
				next := bytes.Clone(model)
				for range rapid.IntRange(0, int(nchunks)*2).Draw(rt, "puts") {
					c := rapid.Int64Range(0, nchunks-1).Draw(rt, "chunk")
					n := min(chunk, size-c*chunk)
					p := chunkData(last+1, c, n)
					p[0] = byte(rapid.IntRange(0, 255).Draw(rt, "salt"))
					if rapid.Bool().Draw(rt, "buffer") {
						p = putVia(rt, txn, chunk, p, rapid.IntRange(0, 2).Draw(rt, "how"))
					}
					if err := txn.Put(c, p); err != nil {
						rt.Fatal(err)
					}
					copy(next[c*chunk:], p)
				}
				if op == 1 {
					if err := txn.Abort(); err != nil {
						rt.Fatal(err)
					}
					break
				}
				at := time.Unix(int64(last)+1000, 5)
				cp, err := txn.Commit(at)
				if err != nil {
					rt.Fatal(err)
				}
				if cp.Seq != last+1 || !cp.Time.Equal(at) {
					rt.Fatalf("Commit returned %+v, want seq %d at %v", cp, last+1, at)
				}
				last, model = cp.Seq, next
			case 2: // reopen
				if err := im.Close(); err != nil {
					rt.Fatal(err)
				}
				if im, err = image.OpenOn(d.img, d.jnl, opt); err != nil {
					rt.Fatal(err)
				}
			case 3: // a read of any range
				off := rapid.Int64Range(0, size-1).Draw(rt, "off")
				p := make([]byte, rapid.Int64Range(1, size-off).Draw(rt, "len"))
				if _, err := im.ReadAt(p, off); err != nil {
					rt.Fatal(err)
				}
				if !bytes.Equal(p, model[off:off+int64(len(p))]) {
					rt.Fatalf("ReadAt(%d bytes at %d) differs from the model", len(p), off)
				}
			}
			if got := im.Last().Seq; got != last {
				rt.Fatalf("Last().Seq = %d, want %d", got, last)
			}
		}
		if !bytes.Equal(readAll(rt, im), model) {
			rt.Fatal("the image differs from the model")
		}
		im.Close()
	})
}

// Ensure that a reopened image, and its raw file, hold the last
// checkpoint, with its metadata.
func TestCreateOpen(t *testing.T) {
	path := t.TempDir() + "/vol.img"
	const size, chunk = 1<<20 + 4096, 64 << 10
	im, err := image.Create(path, size, chunk, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.Create(path, size, chunk, image.Options{}); err == nil {
		t.Fatal("Create over an existing image succeeded")
	}
	want := make([]byte, size)
	for seq := uint64(1); seq <= 3; seq++ {
		txn, err := im.Begin(seq)
		if err != nil {
			t.Fatal(err)
		}
		for c := int64(seq - 1); c*chunk < size; c += 2 {
			p := chunkData(seq, c, min(chunk, size-c*chunk))
			if err := txn.Put(c, p); err != nil {
				t.Fatal(err)
			}
			copy(want[c*chunk:], p)
		}
		if _, err := txn.Commit(time.Unix(100, int64(seq))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := im.Begin(5); err == nil {
		t.Fatal("Begin(5) after checkpoint 3 succeeded")
	}
	im.Close()
	im, err = image.Open(path, image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if cp := im.Last(); cp.Seq != 3 || !cp.Time.Equal(time.Unix(100, 3)) || cp.Chunks != 8 {
		t.Errorf("Last() = %+v, want checkpoint 3 at 100.000000003 with 8 chunks", cp)
	}
	if !bytes.Equal(readAll(t, im), want) {
		t.Error("the reopened image differs from the last checkpoint")
	}
	if raw, err := readFile(path); err != nil || !bytes.Equal(raw, want) {
		t.Errorf("the raw image file is not the last checkpoint (%v)", err)
	}
}

// Ensure that ReadAt, from other goroutines while checkpoints are
// written, committed and applied in the background, always returns one
// whole checkpoint: never one that is partly applied.
func TestReadDuringCheckpoints(t *testing.T) {
	const chunk, nchunks = 4096, 64
	const size = chunk * nchunks
	for _, cache := range []int64{-1, 0} {
		d := newDevs(size, 1<<20)
		im, err := image.CreateOn(d.img, d.jnl, size, chunk, image.Options{SegmentBytes: 2 * chunk, ApplyCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		states := map[string]uint64{string(readAll(t, im)): im.Last().Seq}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				p := make([]byte, size)
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					last := im.Last().Seq
					mu.Unlock()
					if _, err := im.ReadAt(p, 0); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					seq, ok := states[string(p)]
					mu.Unlock()
					if !ok || seq < last {
						t.Errorf("ReadAt returned no checkpoint's contents, or one older (%d) than Last() before the read (%d)", seq, last)
						return
					}
				}
			})
		}
		model := readAll(t, im)
		for range 30 {
			seq := im.Last().Seq + 1
			txn, err := im.Begin(seq)
			if err != nil {
				t.Fatal(err)
			}
			for c := int64(seq % 3); c < nchunks; c += 3 {
				p := chunkData(seq, c, chunk)
				copy(model[c*chunk:], p)
				if err := txn.Put(c, p); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			states[string(model)] = seq
			mu.Unlock()
			if _, err := txn.Commit(time.Unix(int64(seq), 0)); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		wg.Wait()
		im.Close()
	}
}

// Ensure that a first checkpoint interrupted on an image file (the daemon
// stopped mid-way: the chunks it wrote in place are in the file) reads as
// no checkpoint after a reopen, and that beginning it again zeroes the
// file first, so the raw file ends up holding only the new checkpoint.
func TestFirstInterruptedFile(t *testing.T) {
	path := t.TempDir() + "/vol.img"
	const size, chunk = 1 << 20, 64 << 10
	opt := image.Options{SegmentBytes: 2 * chunk} // Put writes as it goes
	im, err := image.Create(path, size, chunk, opt)
	if err != nil {
		t.Fatal(err)
	}
	txn, err := im.Begin(1)
	if err != nil {
		t.Fatal(err)
	}
	for c := int64(0); c < size/chunk; c++ {
		if err := txn.Put(c, chunkData(1, c, chunk)); err != nil {
			t.Fatal(err)
		}
	}
	txn.Abort()
	im.Close()
	if im, err = image.Open(path, opt); err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	want := make([]byte, size)
	if im.Last().Seq != 0 || !bytes.Equal(readAll(t, im), want) {
		t.Fatalf("after an interrupted first checkpoint: Last() = %+v, or it does not read as zeroes", im.Last())
	}
	if txn, err = im.Begin(1); err != nil {
		t.Fatal(err)
	}
	p := chunkData(2, 3, chunk)
	copy(want[3*chunk:], p)
	if err := txn.Put(3, p); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Commit(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if raw, err := readFile(path); err != nil || !bytes.Equal(raw, want) {
		t.Fatalf("the raw image file is not the new first checkpoint alone: the interrupted one's chunks stayed (%v)", err)
	}
}
