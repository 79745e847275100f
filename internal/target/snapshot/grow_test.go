package snapshot_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Ensure that with autoextend armed an origin write that finds the COW
// full waits for the COW to grow, takes the new space in by itself (the
// kernel reads the COW's size at each allocation), and never invalidates
// the snapshot; and that crossing the threshold raised a device event.
func TestSnapshot_autoextendWaitsForGrowth(t *testing.T) {
	m, vol, s, cow := growRig(t, t.TempDir())
	ev := s.Info().EventNr
	_, err := s.Message(0, []string{"autoextend", "90"})
	must(t, err)

	done := writeUntilWaiting(t, m, vol, s)
	if s.Info().EventNr == ev {
		t.Fatal("no device event when usage crossed the threshold")
	}
	must(t, os.Truncate(cow, 64*4096))
	must(t, <-done)
	if got := status(t, s); got == "0 2048 snapshot Invalid" {
		t.Fatal("snapshot invalidated although its COW grew")
	}
	got := make([]byte, 10*4096)
	_, err = s.ReadAt(got, 0)
	must(t, err)
	if !bytes.Equal(got, make([]byte, len(got))) {
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

// growRig makes, in dir, a 1 MiB origin file and a COW file of 8 chunks
// of 4 KiB (header, area, 6 data chunks), and over them vol, its
// snapshot-origin, and s, a persistent snapshot. It returns the manager,
// vol, s and the COW file's path.
func growRig(t *testing.T, dir string) (m *dm.Manager, vol, s *dm.Device, cow string) {
	orig, cow := filepath.Join(dir, "orig"), filepath.Join(dir, "cow")
	must(t, os.WriteFile(orig, make([]byte, 1<<20), 0o600))
	must(t, os.WriteFile(cow, make([]byte, 8*4096), 0o600))
	reg := dm.NewRegistry()
	all.Register(reg)
	m = dm.NewManager(reg, dm.NewDevicePool(nil))
	vol, err := m.Create("vol", dm.CreateOptions{Table: "0 2048 snapshot-origin " + orig})
	must(t, err)
	must(t, vol.Suspend(dm.SuspendOptions{}))
	s, err = m.Create("s", dm.CreateOptions{Table: "0 2048 snapshot " + orig + " " + cow + " P 8"})
	must(t, err)
	must(t, vol.Resume())
	t.Cleanup(func() { m.Remove("s", dm.RemoveOptions{}); m.Remove("vol", dm.RemoveOptions{}) })
	return m, vol, s, cow
}

// writeUntilWaiting writes 10 chunks to vol, more than s's COW of growRig
// holds, and returns once the write waits for the COW to grow; done says
// how the write ended.
func writeUntilWaiting(t *testing.T, m *dm.Manager, vol, s *dm.Device) (done <-chan error) {
	t.Helper()
	waiting := growWaits(t, m)
	ch := make(chan error, 1)
	go func() { _, err := vol.WriteAt(pattern(10*4096, 9), 0); ch <- err }()
	select {
	case <-waiting:
	case err := <-ch:
		t.Fatalf("the origin write finished (%v) without waiting for the full COW to grow; snapshot status %q", err, status(t, s))
	}
	return ch
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

// Ensure that a COW in memory (a file on tmpfs, as the daemon places a
// memory origin's COW) grows as a COW file on disk does: with autoextend
// armed a write that finds it full waits, and the file grown is taken in;
// a growth taken in on resume counts in the status too, the snapshot
// keeps the origin's old data, and the origin its DAX capability. Before,
// the memory COW was mapped at its size, so the write waited until
// autoextend gave up and the snapshot was invalidated.
func TestSnapshot_memoryCOWGrows(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-memcow-")
	if err != nil {
		testutil.Skip(t, "no tmpfs at /dev/shm: "+err.Error())
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m, vol, s, cow := growRig(t, dir)
	caps := vol.Capabilities()
	if !caps.Has(dm.DAX) {
		t.Fatalf("origin on tmpfs with a snapshot whose COW is on tmpfs has capabilities %s, want dax", caps)
	}
	_, err = s.Message(0, []string{"autoextend", "90"})
	must(t, err)

	done := writeUntilWaiting(t, m, vol, s)
	must(t, os.Truncate(cow, 64*4096))
	must(t, <-done)
	if got, want := status(t, s), "0 2048 snapshot 96/512 16"; got != want {
		t.Fatalf("status after autoextend %q, want %q (10 chunks in a COW of 64)", got, want)
	}

	must(t, os.Truncate(cow, 128*4096))
	must(t, s.Suspend(dm.SuspendOptions{}))
	must(t, s.Resume())
	if got, want := status(t, s), "0 2048 snapshot 96/1024 16"; got != want {
		t.Fatalf("status after growing the COW and resuming %q, want %q", got, want)
	}
	more := pattern(100*4096, 3) // past the first 64 chunks
	_, err = vol.WriteAt(more, 20*4096)
	must(t, err)
	got := make([]byte, 120*4096)
	_, err = s.ReadAt(got, 0)
	must(t, err)
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("snapshot does not read the origin's old data after its memory COW grew")
	}
	if vol.Capabilities() != caps {
		t.Fatalf("origin's capabilities %s after the COW grew, were %s", vol.Capabilities(), caps)
	}
}
