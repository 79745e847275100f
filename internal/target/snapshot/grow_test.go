package snapshot_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
)

// Ensure that with autoextend armed an origin write that finds the COW
// full waits for the COW to grow, takes the new space in by itself (the
// kernel reads the COW's size at each allocation), and never invalidates
// the snapshot; and that crossing the threshold raised a device event.
func TestSnapshot_autoextendWaitsForGrowth(t *testing.T) {
	dir := t.TempDir()
	orig, cow := filepath.Join(dir, "orig"), filepath.Join(dir, "cow")
	must(t, os.WriteFile(orig, make([]byte, 1<<20), 0o600))
	must(t, os.WriteFile(cow, make([]byte, 8*4096), 0o600)) // header, area, 6 data chunks
	reg := dm.NewRegistry()
	all.Register(reg)
	m := dm.NewManager(reg, dm.NewDevicePool(nil))
	vol, err := m.Create("vol", dm.CreateOptions{Table: "0 2048 snapshot-origin " + orig})
	must(t, err)
	must(t, vol.Suspend(dm.SuspendOptions{}))
	s, err := m.Create("s", dm.CreateOptions{Table: "0 2048 snapshot " + orig + " " + cow + " P 8"})
	must(t, err)
	must(t, vol.Resume())
	t.Cleanup(func() { m.Remove("s", dm.RemoveOptions{}); m.Remove("vol", dm.RemoveOptions{}) })
	ev := s.Info().EventNr
	_, err = s.Message(0, []string{"autoextend", "90"})
	must(t, err)

	waiting := growWaits(t, m)
	data := pattern(10*4096, 9)
	done := make(chan error, 1)
	go func() { _, err := vol.WriteAt(data, 0); done <- err }()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("the origin write finished (%v) without waiting for the full COW to grow; snapshot status %q", err, status(t, s))
	}
	if s.Info().EventNr == ev {
		t.Fatal("no device event when usage crossed the threshold")
	}
	must(t, os.Truncate(cow, 64*4096))
	must(t, <-done)
	if got := status(t, s); got == "0 2048 snapshot Invalid" {
		t.Fatal("snapshot invalidated although its COW grew")
	}
	got := make([]byte, len(data))
	_, err = s.ReadAt(got, 0)
	must(t, err)
	if !bytes.Equal(got, make([]byte, len(data))) {
		t.Fatal("snapshot does not read the origin's old data after its COW grew")
	}
}

// Ensure that `autoextend 0` wakes a waiting write, which then
// invalidates the snapshot as it would have without autoextend, and that
// bad messages are refused.
func TestSnapshot_autoextendOffStopsWaiting(t *testing.T) {
	w := newWorldWith(t, 8*4096)
	s0 := w.takeSnapshot(0, "P")
	_, err := s0.Message(0, []string{"autoextend", "90"})
	must(t, err)
	waiting := growWaits(t, w.m)
	done := make(chan error, 1)
	go func() { _, err := w.vol.WriteAt(pattern(10*4096, 3), 0); done <- err }()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("the origin write finished (%v) without waiting for the full COW to grow; status %q", err, status(t, s0))
	}
	_, err = s0.Message(0, []string{"autoextend", "0"})
	must(t, err)
	must(t, <-done) // the origin never sees the snapshot's trouble
	if got := status(t, s0); got != "0 512 snapshot Invalid" {
		t.Fatalf("status %q, want Invalid", got)
	}
	for _, bad := range [][]string{{"autoextend", "101"}, {"autoextend"}, {"grow", "x"}, {"bogus"}} {
		if _, err := s0.Message(0, bad); err == nil {
			t.Errorf("message %q accepted", bad)
		}
	}
}

// growWaits signals when an allocation starts waiting for its COW to grow.
func growWaits(t *testing.T, m *dm.Manager) <-chan struct{} {
	waiting := make(chan struct{}, 1)
	snapshot.SetGrowWaitHook(t, m, func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	})
	return waiting
}
