package daemon_test

import (
	"errors"
	"path/filepath"
	"strings"

	"bytes"
	"fmt"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/state"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that a recorded persistent snapshot whose COW header was zeroed
// while the daemon was stopped comes back as `error` with a note, reads
// fail instead of presenting the origin's current data, and the COW is
// never re-initialized (area 0 rewritten), across restarts, until the
// snapshot is removed. It came back `active` and empty.
func TestSnapshot_restartZeroedHeader(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", volSize)
	r := rand.New(rand.NewPCG(8, 9))
	model := randBytes(r, volSize)
	e.write("vol", 0, model)
	s := e.snap("vol", "s1")
	p := randBytes(r, 64<<10)
	e.write("vol", 8192, p)
	copy(model[8192:], p)
	e.stop()

	f, err := os.OpenFile(s.COW, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cow, err := os.ReadFile(s.COW)
	if err != nil {
		t.Fatal(err)
	}

	for range 2 {
		e.start()
		got, err := e.c.Snapshot(bg, "s1")
		if err != nil {
			t.Fatal(err)
		}
		if got.State != wire.SnapshotError || !hasAll(got.Note, s.COW, "no longer starts with a snapshot header", "never re-initializes", "daxsnap snapshot remove s1") {
			t.Fatalf("s1 after a restart with its COW header zeroed: %+v", got)
		}
		if tbl := e.table("s1", false); tbl != fmt.Sprintf("0 %d error \n", volSize/512) {
			t.Fatalf("s1 table = %q, want an error table", tbl)
		}
		_, err = e.c.ReadData(bg, "s1", 0, 512)
		wantCode(t, err, wire.CodeIO)
		e.wantData("vol", model)
		after, err := os.ReadFile(s.COW)
		if err != nil {
			t.Fatal(err)
		}
		if i := testutil.FirstDiff(after, cow); i >= 0 {
			t.Fatalf("the daemon wrote the COW at byte %d (re-initialized it)", i)
		}
		e.stop()
	}
	e.start()
	e.must("remove s1", e.c.SnapshotRemove(bg, "s1"))
	e.wantDevices("vol")
	e.wantData("vol", model)
	if !bytes.Equal(e.read("vol", 8192, int64(len(p))), p) {
		t.Fatal("vol lost its writes")
	}
}

// lostSnapshot makes vol (a file volume) with snapshot s1 holding
// exceptions, and stops the daemon. It returns the snapshot's image, the
// origin's data, the origin's table and the COW's path.
func lostSnapshot(t *testing.T, e *env) (img, model []byte, table, cow string) {
	t.Helper()
	path := e.fileVol("vol", volSize)
	r := rand.New(rand.NewPCG(10, 11))
	model = randBytes(r, volSize)
	e.write("vol", 0, model)
	s := e.snap("vol", "s1")
	img = bytes.Clone(model)
	for range 8 {
		off, p := r.Int64N(volSize-8192), randBytes(r, 8192)
		copy(model[off:], p)
		e.write("vol", off, p)
	}
	e.stop()
	return img, model, linear(path, volSize/512), s.COW
}

// Ensure that a missing or empty state file (with no backup either)
// never costs a snapshot its data: the COW files the daemon cannot
// account for go to STATE/lost+found, the start says so, and `cow adopt`
// brings the snapshot back over its recreated origin, exact, and kept
// across a restart. They were deleted ("deleted a COW file no snapshot
// uses").
func TestSnapshot_lostStateAdopt(t *testing.T) {
	for _, how := range []string{"missing", "empty"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			img, model, table, cow := lostSnapshot(t, e)
			db := filepath.Join(e.cfg.StateDir, state.FileName)
			os.Remove(db + state.BackupSuffix)
			if how == "missing" {
				os.Remove(db)
			} else {
				os.WriteFile(db, nil, 0o600)
			}
			e.start()
			e.wantDevices()
			lost := filepath.Join(e.cfg.StateDir, snapshots.LostFoundDir, filepath.Base(cow))
			if _, err := os.Stat(lost); err != nil {
				t.Fatalf("the COW of s1 is not in lost+found: %v (cow dir: %v)", err, e.cowFiles())
			}
			if f := e.cowFiles(); len(f) != 0 {
				t.Fatalf("COW files left in the COW directory: %v", f)
			}
			if logs := e.logs.String(); !hasAll(logs, "lost+found", "daxsnap cow adopt", "chunk 4096 bytes") {
				t.Fatalf("the start did not say where the COW went:\n%s", logs)
			}

			// The origin comes back as the user recreates it; then adopt.
			e.create("vol", table)
			req := wire.SnapshotCreate{Origin: "vol", Name: "s1", COW: lost, Adopt: true}
			s, err := e.c.SnapshotCreate(bg, req)
			if err != nil {
				t.Fatalf("adopt: %v", err)
			}
			if s.State != wire.SnapshotActive || s.Exceptions == 0 || s.COW != cow || !hasAll(s.Note, "Adopted", "written since") {
				t.Fatalf("adopted snapshot: %+v", s)
			}
			e.wantData("s1", img)
			e.wantData("vol", model)
			if _, err := os.Stat(lost); !os.IsNotExist(err) {
				t.Fatalf("the adopted COW is still in lost+found: %v", err)
			}
			e.restart()
			e.wantData("s1", img)
			e.must("remove s1", e.c.SnapshotRemove(bg, "s1"))
			if f := e.cowFiles(); len(f) != 0 {
				t.Fatalf("COW files left after removing the adopted snapshot: %v", f)
			}
		})
	}
}

// Ensure that a state file lost while its backup survives is not taken
// for a new state directory, and that Recover brings everything back.
func TestSnapshot_lostStateRecover(t *testing.T) {
	e := newEnv(t)
	img, model, _, cow := lostSnapshot(t, e)
	os.Remove(filepath.Join(e.cfg.StateDir, state.FileName))
	_, err := daemon.Start(e.cfg)
	if !errors.Is(err, state.ErrDamaged) || !strings.Contains(err.Error(), "--recover") {
		t.Fatalf("start without the state file but with its backup: %v, want ErrDamaged pointing to --recover", err)
	}
	if _, err := os.Stat(cow); err != nil {
		t.Fatalf("the refused start touched the COW: %v", err)
	}
	e.cfg.Recover = true
	e.start()
	e.wantData("s1", img)
	e.wantData("vol", model)
}

// Ensure that adopting refuses what it cannot bring back, with the reason.
func TestSnapshot_adoptRefused(t *testing.T) {
	e := newEnv(t)
	e.fileVol("vol", volSize)
	s := e.snap("vol", "s1")
	blank := filepath.Join(t.TempDir(), "blank.cow")
	os.WriteFile(blank, make([]byte, 1<<20), 0o600)
	for _, c := range []struct {
		req  wire.SnapshotCreate
		code string
		want []string
	}{
		{wire.SnapshotCreate{Origin: "vol", Name: "s2", COW: blank, Adopt: true}, wire.CodeInvalidArgument, []string{"no snapshot header", "cow inspect"}},
		{wire.SnapshotCreate{Origin: "vol", Name: "s2", COW: s.COW, Adopt: true}, wire.CodeBusy, []string{"used by the table of s1"}},
		{wire.SnapshotCreate{Origin: "vol", Name: "s2", Adopt: true}, wire.CodeInvalidArgument, []string{"needs the COW file"}},
		{wire.SnapshotCreate{Origin: "nope", Name: "s2", COW: blank, Adopt: true}, wire.CodeNotFound, []string{"no origin device nope"}},
	} {
		_, err := e.c.SnapshotCreate(bg, c.req)
		wantCode(t, err, c.code, c.want...)
	}
}
