package persistent

import (
	"errors"
	"slices"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// FuzzLoad feeds arbitrary COW images to Open+Load and Inspect. Neither may
// panic; they must agree on what they accept; and an accepted image,
// rewritten by a fresh store committing its exceptions in order, must load
// back to the same exceptions.
func FuzzLoad(f *testing.F) {
	for _, v := range vectors() {
		if img := v.img.bytes(); len(img) <= 64<<10 {
			f.Add(img)
		}
	}
	f.Add(validImage(1, 12, run(3, 2, 5)).bytes())
	f.Add(validImage(1, 40, run(0, 2, 32), run(100, 35, 2)).bytes())
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) > 256<<10 {
			return
		}
		rep, ierr := Inspect(memImage("fuzz.cow", img))
		s, got, err := loadImage(memImage("fuzz.cow", img), 0)
		if err != nil {
			if ierr == nil && !rep.Fresh && !errors.Is(err, exstore.ErrInvalidated) {
				t.Fatalf("Load failed (%v) but Inspect accepted the image", err)
			}
			return
		}
		if ierr != nil {
			t.Fatalf("Load accepted the image but Inspect failed: %v", ierr)
		}
		if !rep.Fresh && !slices.Equal(rep.Exceptions, got) {
			t.Fatalf("Inspect found %v, Load %v", rep.Exceptions, got)
		}
		rewriteAndCompare(t, s.ChunkSize(), int64(len(img)), got)
	})
}

func loadImage(dev *backingtest.Mem, chunk exstore.Sector) (*Store, []exstore.Exception, error) {
	s, err := Open(dev, Options{ChunkSize: chunk})
	if err != nil {
		return nil, nil, err
	}
	var got []exstore.Exception
	err = s.Load(func(e exstore.Exception) error { got = append(got, e); return nil })
	return s, got, err
}

func rewriteAndCompare(t *testing.T, chunk exstore.Sector, size int64, want []exstore.Exception) {
	dev := backingtest.NewMem("rewrite.cow", size, 0)
	s, none, err := loadImage(dev, chunk)
	if err != nil || len(none) != 0 {
		t.Fatalf("fresh store of %d bytes with %d-sector chunks: %v, %d exceptions", size, chunk, err, len(none))
	}
	for _, e := range want {
		if err := s.Commit(e); err != nil {
			t.Fatalf("rewriting %d exceptions: %v", len(want), err)
		}
	}
	s.Close()
	_, got, err := loadImage(dev, 0)
	if err != nil {
		t.Fatalf("reload of the rewritten image: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rewritten image loads %v, want %v", got, want)
	}
}
