package dm_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// recordingFiller notes what a device asks of it.
type recordingFiller struct {
	mu    sync.Mutex
	fills []string
	all   int
	fail  error
}

func (f *recordingFiller) Fill(off, n int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fills = append(f.fills, fmt.Sprintf("%d+%d", off, n))
	return f.fail
}

func (f *recordingFiller) FillAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all++
	return f.fail
}

func (f *recordingFiller) Progress() (int64, int64) { return 1 << 20, 4 << 20 }

func (f *recordingFiller) take() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fills, all := f.fills, f.all
	f.fills, f.all = nil, 0
	return fills, all
}

// TestFiller_gatesBlockIO: while a device has a filler, each block I/O
// asks it for its range before it runs, a discard or zeroing waits for
// all of it, and table changes of the device and of devices over it are
// refused; without it, nothing is asked.
func TestFiller_gatesBlockIO(t *testing.T) {
	r := newRig(t)
	low := r.create(t, "low", "0 2048 fake mem 0")
	top := r.create(t, "top", "0 2048 fake /dev/mapper/low 0")
	f := &recordingFiller{}
	low.SetFiller(f)

	buf := make([]byte, 4096)
	if _, err := low.ReadAt(buf, 8192); err != nil {
		t.Fatal(err)
	}
	if _, err := low.WriteAt(buf[:512], 512); err != nil {
		t.Fatal(err)
	}
	if _, err := low.ReadFileAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := low.WriteFileAt(buf, 4096); err != nil {
		t.Fatal(err)
	}
	if err := low.PrepareWrite(65536, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := top.ReadAt(buf, 12288); err != nil { // through the stack
		t.Fatal(err)
	}
	fills, all := f.take()
	if want := []string{"8192+4096", "512+512", "0+4096", "4096+4096", "65536+4096", "12288+4096"}; !slices.Equal(fills, want) || all != 0 {
		t.Fatalf("fills %v, all %d; want %v, 0", fills, all, want)
	}
	must(t, low.Discard(0, 4096))
	must(t, top.WriteZeroes(0, 4096))
	if fills, all := f.take(); len(fills) != 0 || all != 2 {
		t.Fatalf("discard and zeroing: fills %v, all %d; want none, 2", fills, all)
	}
	if !low.Filling() || !top.Filling() {
		t.Fatal("Filling is false for the device restored or the one over it")
	}
	for _, c := range []struct {
		what string
		err  error
	}{
		{"load low", low.Load("0 2048 fake mem 0")},
		{"suspend low", low.Suspend(dm.SuspendOptions{})},
		{"load top", top.Load("0 2048 fake /dev/mapper/low 0")},
		{"suspend top", top.Suspend(dm.SuspendOptions{})},
	} {
		if !errors.Is(c.err, dm.ErrRestoring) {
			t.Errorf("%s while low is restored: %v, want ErrRestoring", c.what, c.err)
		}
	}

	f.fail = errors.New("image unreadable")
	if _, err := top.ReadAt(buf, 0); err == nil {
		t.Fatal("a read succeeded while its range could not be restored")
	}
	f.fail = nil
	f.take()

	low.SetFiller(nil)
	if _, err := low.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	must(t, low.Discard(0, 4096))
	if fills, all := f.take(); len(fills) != 0 || all != 0 || low.Filling() || top.Filling() {
		t.Fatalf("filler removed: fills %v, all %d, filling %v/%v", fills, all, low.Filling(), top.Filling())
	}
	must(t, top.Suspend(dm.SuspendOptions{}))
	must(t, top.Resume())
}
