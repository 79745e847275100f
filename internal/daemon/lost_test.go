package daemon_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

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
		got, err := e.c.Snapshot("s1")
		if err != nil {
			t.Fatal(err)
		}
		if got.State != wire.SnapshotError || !hasAll(got.Note, s.COW, "no longer starts with a snapshot header", "never re-initializes", "daxsnap snapshot remove s1") {
			t.Fatalf("s1 after a restart with its COW header zeroed: %+v", got)
		}
		if tbl := e.table("s1", false); tbl != fmt.Sprintf("0 %d error \n", volSize/512) {
			t.Fatalf("s1 table = %q, want an error table", tbl)
		}
		_, err = e.c.ReadData("s1", 0, 512)
		wantCode(t, err, wire.CodeIO)
		e.wantData("vol", model)
		after, err := os.ReadFile(s.COW)
		if err != nil {
			t.Fatal(err)
		}
		if i := firstDiff(after, cow); i >= 0 {
			t.Fatalf("the daemon wrote the COW at byte %d (re-initialized it)", i)
		}
		e.stop()
	}
	e.start()
	e.must("remove s1", e.c.SnapshotRemove("s1"))
	e.wantDevices("vol")
	e.wantData("vol", model)
	if !bytes.Equal(e.read("vol", 8192, int64(len(p))), p) {
		t.Fatal("vol lost its writes")
	}
}
