package snapshot

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Ensure that the COW memory is populated one window ahead of the
// allocations, window after window, never past the device, and that a
// device without Populate gets no helper.
func TestCowAhead(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-ahead-")
	if err != nil {
		t.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "cow")
	const size = 3*aheadWindow + aheadWindow/2
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	dev, err := backing.Open(path, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	allocated := func() int64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	a := newCowAhead(dev, 4096, slog.Default())
	if a == nil {
		t.Fatal("no populate helper for a tmpfs COW device")
	}
	steps := []struct{ used, want int64 }{
		{0, aheadWindow},               // opening populates the first window
		{aheadWindow / 2, aheadWindow}, // not yet within half a window of its end
		{aheadWindow/2 + 4096, 2 * aheadWindow},
		{3 * aheadWindow, 2*aheadWindow + aheadWindow/2}, // a jump: from where it is used to the end, not the gap
		{size, 2*aheadWindow + aheadWindow/2},
	}
	for _, s := range steps {
		a.used(s.used)
		a.wait()
		if got := allocated(); got != s.want {
			t.Fatalf("after use up to %d: %d bytes populated, want %d", s.used, got, s.want)
		}
	}
	if a := newCowAhead(fileDevice(t), 4096, slog.Default()); a != nil {
		t.Error("a plain file COW device got a populate helper")
	}
	var none *cowAhead
	none.used(1 << 20) // nil helper: nothing to do, no panic
	none.wait()
}

func fileDevice(t *testing.T) backing.Device {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cow.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := backing.Open(path, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}
