package daemon_test

import (
	"math/rand/v2"
	"testing"
)

// Ensure that two daemons in one process keep their snapshots apart:
// writes to one daemon's origin copy out to that daemon's snapshots only,
// even where both daemons' devices have the same names (and so the same
// per-daemon identities of /dev/mapper/vol-real).
func TestSnapshot_twoDaemonsInOneProcess(t *testing.T) {
	a, b := newEnv(t), newEnv(t)
	r := rand.New(rand.NewPCG(10, 1))
	imgA, imgB := randBytes(r, volSize), randBytes(r, volSize)
	for _, x := range []struct {
		e   *env
		img []byte
	}{{a, imgA}, {b, imgB}} {
		x.e.fileVol("vol", volSize)
		x.e.write("vol", 0, x.img)
		x.e.snap("vol", "s1")
	}

	a.write("vol", 0, randBytes(r, volSize))
	if s, err := b.c.Snapshot(bg, "s1"); err != nil || s.Exceptions != 0 {
		t.Fatalf("daemon B's s1 after writes to daemon A's vol: %d exceptions (%+v, %v); want 0: it copied out A's writes", s.Exceptions, s, err)
	}
	if s, err := a.c.Snapshot(bg, "s1"); err != nil || s.Exceptions != volSize/4096 {
		t.Fatalf("daemon A's s1 after writes to its vol: %+v, %v; want %d exceptions", s, err, volSize/4096)
	}
	a.wantData("s1", imgA)
	b.wantData("s1", imgB)
	b.wantData("vol", imgB)
}
