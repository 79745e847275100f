package lazyrestore_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
	"pgregory.net/rapid"

	"github.com/daxsnap/daxsnap/internal/lazyrestore"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

const (
	page = 4096
	unit = 4 * page
)

// rig is a volume of two pieces in two tmpfs files (the second piece at
// an offset in its file), and the image to restore.
type rig struct {
	t      testing.TB
	files  [2]*os.File
	pieces []lazyrestore.Piece
	image  []byte
	size   int64
}

func newRig(t testing.TB, size int64, seed uint64) *rig {
	testutil.RequireRoot(t)
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-lazy-")
	if err != nil {
		testutil.Skip(t, "no /dev/shm: "+err.Error())
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &rig{t: t, size: size, image: make([]byte, size)}
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range r.image {
		r.image[i] = byte(rng.Uint32())
	}
	first := size / 2 / page * page
	for i := range r.files {
		f, err := os.OpenFile(filepath.Join(dir, []string{"a", "b"}[i]), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if err := f.Truncate(size + 3*page); err != nil {
			t.Fatal(err)
		}
		r.files[i] = f
	}
	r.pieces = []lazyrestore.Piece{
		{Off: 0, Len: first, FD: int(r.files[0].Fd()), FileOff: 0, Page: page, Path: "a"},
		{Off: first, Len: size - first, FD: int(r.files[1].Fd()), FileOff: 3 * page, Page: page, Path: "b"},
	}
	return r
}

func (r *rig) start(img []byte) *lazyrestore.Restore {
	r.t.Helper()
	lr, err := lazyrestore.Start(lazyrestore.Config{Size: r.size, Pieces: r.pieces, Image: bytes.NewReader(img), Unit: unit})
	if err != nil {
		r.t.Fatal(err)
	}
	return lr
}

// at is where volume offset off lives.
func (r *rig) at(off int64) (*os.File, int64) {
	for i, p := range r.pieces {
		if off >= p.Off && off < p.Off+p.Len {
			return r.files[i], p.FileOff + off - p.Off
		}
	}
	panic("offset outside the volume")
}

// read is the volume's [off, off+n) as its files hold it (pread reads a
// hole as zeroes and allocates nothing).
func (r *rig) read(off, n int64) []byte {
	out := make([]byte, n)
	for i := int64(0); i < n; {
		f, foff := r.at(off + i)
		k := min(n-i, page-(off+i)%page)
		if _, err := f.ReadAt(out[i:i+k], foff); err != nil {
			r.t.Fatal(err)
		}
		i += k
	}
	return out
}

// write is a client's store to an already restored page.
func (r *rig) write(off int64, p []byte) {
	for i := int64(0); i < int64(len(p)); {
		f, foff := r.at(off + i)
		k := min(int64(len(p))-i, page-(off+i)%page)
		if _, err := f.WriteAt(p[i:i+k], foff); err != nil {
			r.t.Fatal(err)
		}
		i += k
	}
}

// data reports whether the page at off is in its file.
func (r *rig) data(off int64) bool {
	f, foff := r.at(off)
	d, err := unix.Seek(int(f.Fd()), foff, unix.SEEK_DATA)
	return err == nil && d == foff
}

// TestRestore_model runs fills, background passes, client writes and
// restarts in random order against a byte model: every range Fill
// returned for holds the model's bytes (the image, with the writes made
// after), no page is restored before it is asked for or passed, a
// restart continues without undoing a write, and the end state is the
// model.
func TestRestore_model(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		size := int64(rapid.IntRange(3, 40).Draw(rt, "pages")) * page
		r := newRig(t, size, rapid.Uint64().Draw(rt, "seed"))
		model := bytes.Clone(r.image)
		filled := make([]bool, size/page) // pages Fill has returned for
		lr := r.start(r.image)
		defer func() { lr.Close() }()
		span := func(what string) (int64, int64) {
			off := rapid.Int64Range(0, size-1).Draw(rt, what+" offset")
			return off, rapid.Int64Range(1, size-off).Draw(rt, what+" length")
		}
		for range rapid.IntRange(1, 30).Draw(rt, "steps") {
			switch rapid.IntRange(0, 4).Draw(rt, "op") {
			case 0: // a fill on demand
				off, n := span("fill")
				if err := lr.Fill(off, n); err != nil {
					rt.Fatal(err)
				}
				for p := off / page; p <= (off+n-1)/page; p++ {
					filled[p] = true
				}
				if got := r.read(off, n); !bytes.Equal(got, model[off:off+n]) {
					rt.Fatalf("after Fill(%d, %d) the volume differs from the model", off, n)
				}
			case 1: // a client's store to a restored page
				off, n := span("write")
				if err := lr.Fill(off, n); err != nil {
					rt.Fatal(err)
				}
				for p := off / page; p <= (off+n-1)/page; p++ {
					filled[p] = true
				}
				p := bytes.Repeat([]byte{byte(off)}, int(n))
				r.write(off, p)
				copy(model[off:], p)
			case 2: // a restart: the restore continues from the files
				lr.Close()
				lr = r.start(r.image)
			case 4: // a crash in the middle of a unit's fill, after a store to a page it had placed
				u := rapid.Int64Range(0, (size-1)/unit).Draw(rt, "unit")
				lo, hi := u*unit/page, min((u+1)*unit, size)/page
				if r.data(lo * page) {
					continue // restored already, or this case again
				}
				placed := rapid.Int64Range(lo, hi-1).Draw(rt, "placed up to page")
				for p := lo; p <= placed; p++ {
					r.write(p*page, model[p*page:(p+1)*page])
				}
				p := rapid.Int64Range(lo, placed).Draw(rt, "stored page") * page
				v := bytes.Repeat([]byte{0xee}, 100)
				r.write(p, v)
				copy(model[p:], v)
				lr.Close()
				lr = r.start(r.image)
			case 3: // check: pages not asked for may be holes; those asked for are the model
				for p := range filled {
					off := int64(p) * page
					if filled[p] && !bytes.Equal(r.read(off, page), model[off:off+page]) {
						rt.Fatalf("page %d differs from the model", p)
					}
				}
			}
		}
		if err := lr.Run(2); err != nil {
			rt.Fatal(err)
		}
		if !lr.Complete() || lr.FillAll() != nil {
			rt.Fatal("Run returned and the restore is not complete")
		}
		if done, total := lr.Progress(); done != total || total != size {
			rt.Fatalf("progress %d of %d, want %d of %d", done, total, size, size)
		}
		if !bytes.Equal(r.read(0, size), model) {
			rt.Fatal("after the background pass the volume differs from the model")
		}
		for off := int64(0); off < size; off += page {
			if !r.data(off) {
				rt.Fatalf("page at %d is still a hole", off)
			}
		}
	})
}

// TestRestore_untouchedStaysHole: a fill restores its units and nothing
// else.
func TestRestore_untouchedStaysHole(t *testing.T) {
	r := newRig(t, 16*page, 7)
	lr := r.start(r.image)
	defer lr.Close()
	if err := lr.Fill(5*page, 1); err != nil {
		t.Fatal(err)
	}
	for p := int64(0); p < 16; p++ {
		want := p >= 4 && p < 8 // the unit of page 5
		if got := r.data(p * page); got != want {
			t.Errorf("page %d present %v, want %v", p, got, want)
		}
	}
	if done, _ := lr.Progress(); done != unit {
		t.Errorf("progress %d, want %d", done, unit)
	}
}

// TestRestore_concurrent: faults (Fill then a write of that page) from
// several goroutines race the background pass; every write survives,
// every other page is the image. Run it with -race.
func TestRestore_concurrent(t *testing.T) {
	const size = 256 * page
	r := newRig(t, size, 11)
	lr := r.start(r.image)
	defer lr.Close()
	model := bytes.Clone(r.image)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for range 200 {
				off := int64(rng.IntN(size/8)) * 8
				if err := lr.Fill(off, 8); err != nil {
					t.Error(err)
					return
				}
				v := []byte{byte(g), 1, 2, 3, 4, 5, 6, byte(off)}
				mu.Lock()
				r.write(off, v)
				copy(model[off:], v)
				mu.Unlock()
			}
		})
	}
	if err := lr.Run(3); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !bytes.Equal(r.read(0, size), model) {
		t.Fatal("the volume differs from the model")
	}
}

type failingImage struct{}

func (failingImage) ReadAt([]byte, int64) (int, error) { return 0, errors.New("medium error") }

// TestRestore_imageError: a unit that cannot be read is an error for
// every caller, the background pass included, and nothing waits forever.
func TestRestore_imageError(t *testing.T) {
	r := newRig(t, 8*page, 3)
	lr, err := lazyrestore.Start(lazyrestore.Config{Size: r.size, Pieces: r.pieces, Image: failingImage{}, Unit: unit})
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	if err := lr.Fill(0, 1); err == nil {
		t.Fatal("Fill succeeded with an unreadable image")
	}
	if err := lr.Run(2); err == nil {
		t.Fatal("Run succeeded with an unreadable image")
	}
	if err := lr.FillAll(); err == nil {
		t.Fatal("FillAll succeeded with an unreadable image")
	}
	if r.data(0) {
		t.Fatal("a page was placed from an unreadable image")
	}
}
