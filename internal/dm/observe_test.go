package dm_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// recorder is a WriteObserver that records what it is told, as "off+n".
type recorder struct {
	mu    sync.Mutex
	seen  []string
	gran  int64
	block chan struct{} // when set, BeforeWrite waits for it to close
	in    chan struct{} // closed by the first BeforeWrite
	once  sync.Once
}

func (r *recorder) BeforeWrite(off, n int64) {
	r.mu.Lock()
	r.seen = append(r.seen, fmt.Sprintf("%d+%d", off, n))
	r.mu.Unlock()
	if r.in != nil {
		r.once.Do(func() { close(r.in) })
	}
	if r.block != nil {
		<-r.block
	}
}

func (r *recorder) Granularity() int64 { return r.gran }

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

// TestWriteObserver checks that every way of changing a device's data is
// told to its observer first, with the device's own offsets (writes
// through a device stacked on it too), that requests the table refuses
// are not, that WriteGranularity includes the observer's unit, and that
// a device takes one observer until it is removed.
func TestWriteObserver(t *testing.T) {
	m, _ := extentRig(t)
	vol, err := m.Create("vol", dm.CreateOptions{Table: "0 64 linear a 0\n"})
	must(t, err)
	top, err := m.Create("top", dm.CreateOptions{Table: "0 32 linear /dev/mapper/vol 16\n"})
	must(t, err)
	if g := vol.WriteGranularity(0, 4096); g != 0 {
		t.Fatalf("WriteGranularity without an observer = %d, want 0", g)
	}
	r := &recorder{gran: 8192}
	remove, err := vol.SetWriteObserver(r)
	must(t, err)
	if _, err := vol.SetWriteObserver(&recorder{gran: 4096}); !errors.Is(err, dm.ErrBusy) {
		t.Fatalf("second observer: err = %v, want ErrBusy", err)
	}
	if g := vol.WriteGranularity(0, 4096); g != 8192 {
		t.Fatalf("vol's WriteGranularity = %d, want the observer's 8192", g)
	}
	if g := top.WriteGranularity(0, 4096); g != 8192 {
		t.Fatalf("WriteGranularity of a device stacked on vol = %d, want vol's observer's 8192", g)
	}
	_, err = vol.WriteAt(make([]byte, 512), 1024)
	must(t, err)
	must(t, vol.WriteZeroes(4096, 1024))
	must(t, vol.Discard(8192, 512))
	must(t, vol.PrepareWrite(12288, 4096))
	_, err = top.WriteAt(make([]byte, 512), 512) // vol's 16*512+512
	must(t, err)
	must(t, top.PrepareWrite(0, 4096)) // vol's 8192
	if _, err := vol.WriteAt(make([]byte, 512), 64*512); err == nil {
		t.Fatal("a write beyond the device succeeded")
	}
	_, err = vol.ReadAt(make([]byte, 512), 0)
	must(t, err)
	want := []string{"1024+512", "4096+1024", "8192+512", "12288+4096", "8704+512", "8192+4096"}
	if got := r.take(); !slices.Equal(got, want) {
		t.Fatalf("observer was told %v, want %v", got, want)
	}
	remove()
	_, err = vol.WriteAt(make([]byte, 512), 0)
	must(t, err)
	if got := r.take(); len(got) != 0 {
		t.Fatalf("a removed observer was told %v", got)
	}
	if g := vol.WriteGranularity(0, 4096); g != 0 {
		t.Fatalf("WriteGranularity after remove = %d, want 0", g)
	}
	if _, err := vol.SetWriteObserver(&recorder{gran: 4096}); err != nil {
		t.Fatalf("an observer after the first was removed: %v", err)
	}
}

// TestQuiesce checks that Quiesce runs its function only once the block
// I/O under way (its observer call included) has drained, hands it the
// live table's extents, leaves an inactive table inactive, and runs in
// place on a device suspended already, leaving it suspended.
func TestQuiesce(t *testing.T) {
	m, devs := extentRig(t)
	vol, err := m.Create("vol", dm.CreateOptions{Table: "0 64 linear a 0\n"})
	must(t, err)
	r := &recorder{gran: 4096, block: make(chan struct{}), in: make(chan struct{})}
	_, err = vol.SetWriteObserver(r)
	must(t, err)
	data := bytes.Repeat([]byte{0xa5}, 512)
	go func() {
		if _, err := vol.WriteAt(data, 0); err != nil {
			t.Error(err)
		}
	}()
	<-r.in // the write is inside the device, held by its observer
	go func() {
		time.Sleep(50 * time.Millisecond) // give Quiesce time to reach the drain
		close(r.block)
	}()
	must(t, vol.Load("0 64 linear a 64\n"))
	var exts []dm.Extent
	must(t, vol.Quiesce(func(live []dm.Extent) {
		// What the write did inside the device is done. (Not a channel
		// the writer closes once WriteAt returned: the drain may end,
		// and this run, before the writer's goroutine runs again.)
		got := make([]byte, len(data))
		if _, err := devs["a"].ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
			t.Errorf("Quiesce's function ran while a write was still inside the device: a holds %x..., err %v", got[:4], err)
		}
		exts = live
	}))
	want, err := vol.Extents(0, 64*512)
	must(t, err)
	if got, w := simplify(exts), simplify(want); !slices.Equal(got, w) {
		t.Errorf("Quiesce handed %v, want the live table's extents %v", got, w)
	}
	in := vol.Info()
	if in.Suspended || !in.InactiveTable {
		t.Errorf("after Quiesce: suspended %v, inactive table %v; want running with the inactive table kept", in.Suspended, in.InactiveTable)
	}
	if text, _ := vol.Table(dm.Live); text != "0 64 linear a 0\n" {
		t.Errorf("live table after Quiesce = %q, want the one before", text)
	}
	must(t, vol.Suspend(dm.SuspendOptions{}))
	ran := false
	must(t, vol.Quiesce(func([]dm.Extent) { ran = true }))
	if !ran || !vol.Info().Suspended {
		t.Errorf("Quiesce of a suspended device: ran %v, suspended after %v; want true, true", ran, vol.Info().Suspended)
	}
}
