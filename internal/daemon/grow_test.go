package daemon_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

func withCOWSize(n int64) func(*wire.SnapshotCreate) {
	return func(r *wire.SnapshotCreate) { r.COWSize = n }
}

// Ensure that a table loaded over a file that grew since the daemon
// opened it sees the file's new size: sizes are probed again at load.
func TestGrow_backingFileGrownIsSeenAtLoad(t *testing.T) {
	e := newEnv(t)
	path := e.fileVol("vol", mib)
	if err := os.Truncate(path, 2*mib); err != nil {
		t.Fatal(err)
	}
	e.must("load the grown file", e.c.Load(bg, "vol", wire.Load{Table: linear(path, 4096)}))
	e.must("resume", e.c.Resume(bg, "vol"))
	if in := e.info("vol"); in.Sectors != 4096 {
		t.Fatalf("vol has %d sectors after loading the grown file, want 4096", in.Sectors)
	}
	data := bytes.Repeat([]byte{0x5a}, 4096)
	e.write("vol", mib+mib/2, data)
	if got := e.read("vol", mib+mib/2, 4096); !bytes.Equal(got, data) {
		t.Fatal("the grown part of vol reads back other data")
	}
}

// Ensure that a COW file grown behind the daemon's back is taken in when
// the snapshot is resumed, as the kernel's persistent store does.
func TestGrow_cowGrownIsSeenOnResume(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", 8*mib)
	s := e.snap("vol", "s1", withCOWSize(mib))
	if err := os.Truncate(s.COW, 3*mib); err != nil {
		t.Fatal(err)
	}
	e.must("suspend s1", e.c.Suspend(bg, "s1", wire.Suspend{}))
	e.must("resume s1", e.c.Resume(bg, "s1"))
	if got, _ := e.c.Snapshot(bg, "s1"); got.Total != 3*mib/512 {
		t.Fatalf("s1 total %d sectors after its COW grew to 3 MiB, want %d", got.Total, 3*mib/512)
	}
	e.fillPast("vol", "s1", 2*mib)
}

// Ensure that `snapshot extend` grows a snapshot's COW so that it holds
// more than it could before, as lvextend does, that the grown COW keeps
// its size and contents across a restart, and that it refuses what it
// cannot do.
func TestGrow_snapshotExtend(t *testing.T) { testSnapshotExtend(t, (*env).fileVol) }

// The same for a snapshot of a memory origin, whose COW the daemon puts
// on tmpfs: it grows in place. Before memory COWs could grow, extend
// refused it (its mapping was made at its size).
func TestGrow_snapshotExtendMemoryCOW(t *testing.T) { testSnapshotExtend(t, (*env).pmemVol) }

func testSnapshotExtend(t *testing.T, volume func(e *env, name string, size int64) string) {
	e := newEnv(t)
	volume(e, "vol", 8*mib)
	e.snap("vol", "s1", withCOWSize(mib))
	got, err := e.c.SnapshotExtend(bg, "s1", wire.SnapshotExtend{Add: 2 * mib})
	if err != nil {
		t.Fatalf("snapshot extend s1 +2M: %v", err)
	}
	if got.Total != 3*mib/512 || got.State != wire.SnapshotActive {
		t.Fatalf("after extend: total %d sectors, state %s; want %d, active", got.Total, got.State, 3*mib/512)
	}
	if fi, err := os.Stat(got.COW); err != nil || fi.Size() != 3*mib {
		t.Fatalf("COW file after extend: %v, %v; want 3 MiB", fi, err)
	}
	e.fillPast("vol", "s1", 2*mib)

	// The grown file is the record of the new size: a restarted daemon
	// opens the COW at it, with the exceptions made since.
	e.restart()
	if s, _ := e.c.Snapshot(bg, "s1"); s.State != wire.SnapshotActive || s.Total != 3*mib/512 || s.COW != got.COW {
		t.Fatalf("after restart: %+v, want active on %s with %d sectors", s, got.COW, 3*mib/512)
	}
	e.wantData("s1", make([]byte, 2*mib))

	_, err = e.c.SnapshotExtend(bg, "s1", wire.SnapshotExtend{Size: mib})
	wantCode(t, err, wire.CodeInvalidArgument, "never shrinks")
	_, err = e.c.SnapshotExtend(bg, "s1", wire.SnapshotExtend{})
	wantCode(t, err, wire.CodeInvalidArgument, "--size +N")
	_, err = e.c.SnapshotExtend(bg, "vol", wire.SnapshotExtend{Add: mib})
	wantCode(t, err, wire.CodeInvalidArgument, "vol is not a snapshot")
	got, err = e.c.SnapshotExtend(bg, "s1", wire.SnapshotExtend{Size: 1 << 40})
	if err != nil || got.Total*512 > 9*mib {
		t.Fatalf("extend past a full copy: total %d sectors, %v; want at most a full copy of 8 MiB", got.Total, err)
	}
	_, err = e.c.SnapshotExtend(bg, "s1", wire.SnapshotExtend{Add: mib})
	wantCode(t, err, wire.CodeInvalidArgument, "full copy")

	e.restart()
	if s, _ := e.c.Snapshot(bg, "s1"); s.State != wire.SnapshotActive || s.Total != got.Total {
		t.Fatalf("after restart: %+v, want active with %d sectors", s, got.Total)
	}
	e.fillPast("vol", "s1", 8*mib) // a full copy holds the whole origin
}

// fillPast writes n bytes of new data over the start of origin, more than
// the snapshot's COW held before it grew, and checks that the snapshot
// stayed valid and still reads the origin's old data (zeroes).
func (e *env) fillPast(origin, snap string, n int64) {
	e.t.Helper()
	data := bytes.Repeat([]byte{0xee}, int(n))
	e.write(origin, 0, data)
	s, err := e.c.Snapshot(bg, snap)
	if err != nil || s.State != wire.SnapshotActive {
		e.t.Fatalf("%s after writing %d bytes to %s: %+v, %v; want active", snap, n, origin, s, err)
	}
	e.wantData(snap, make([]byte, n))
	e.wantData(origin, data)
}
