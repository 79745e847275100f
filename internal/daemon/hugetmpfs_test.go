package daemon_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Ensure that a volume whose region and COWs are on a tmpfs in 2 MiB pages
// (huge=always), which the daemon writes through its mapping instead of
// with pwrite, keeps every snapshot exact: first writes of whole and
// partial chunks, in one piece and in many, to the origin and to the
// snapshot; and that a checkpoint of it restores after a simulated reboot
// into a fresh region there.
func TestSnapshot_hugeTmpfs(t *testing.T) {
	testutil.RequireRoot(t)
	const size = 8 << 20
	e := newEnvWith(t, func(c *daemon.Config) { c.PmemDir = testutil.Tmpfs(t, "huge=always,size=64m") })
	region := e.pmemVol("vol", size)
	rng := rand.New(rand.NewPCG(3, 4))
	model := make([]byte, size)
	for i := range model {
		model[i] = byte(rng.Uint32())
	}
	e.write("vol", 0, model)
	s1 := e.snap("vol", "s1", withChunk(4096))
	var st unix.Stat_t
	if err := unix.Stat(s1.COW, &st); err != nil || st.Blksize != 2<<20 {
		t.Fatalf("the COW %s is not in huge pages (st_blksize %d, %v): the test would not cover them", s1.COW, st.Blksize, err)
	}
	snapModel := bytes.Clone(model)

	write := func(dev string, m []byte, off, n int64) {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		e.write(dev, off, p)
		copy(m[off:], p)
	}
	write("vol", model, 4096, 4096)        // one whole chunk
	write("vol", model, 3<<20+100, 1000)   // part of a chunk
	write("vol", model, 1<<20, 1<<20)      // a run of 256 chunks
	write("vol", model, 5<<20-2048, 12288) // partial, whole, whole, partial
	for range 64 {
		write("vol", model, rng.Int64N(size/4096)*4096, 4096)
	}
	write("s1", snapModel, 6<<20, 64<<10)  // whole chunks of the snapshot
	write("s1", snapModel, 7<<20+10, 5000) // and parts of two
	e.wantData("vol", model)
	e.wantData("s1", snapModel)
	if !bytes.Equal(e.read("vol", 7<<20, 8192), model[7<<20:7<<20+8192]) {
		t.Fatal("a write to the snapshot reached the origin")
	}

	// A checkpoint, a reboot (the region gone), the restore into a new
	// region on the same mount.
	e.must("snapshot remove", e.c.SnapshotRemove(bg, "s1"))
	e.enableCheckpoints("vol", t.TempDir(), 0)
	e.checkpoint("vol")
	e.stop()
	if err := os.Remove(region); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Dir(region))
	e.start()
	e.wantData("vol", model)
}

// Ensure that a snapshot of memory on a tmpfs in 2 MiB pages, mapped by
// four writer processes appending causally ordered records, is a
// consistent cut that stays as it is, and that every store after it
// reaches the origin: write-protecting a mapping of huge pages splits
// them, and the faults' copy-out goes between the daemon's mappings.
// With the cut disabled the checks must catch it.
func TestDAXSession_cutOnHugeTmpfs(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 4 << 20
	for _, cut := range []bool{true, false} {
		t.Run(fmt.Sprintf("cut=%v", cut), func(t *testing.T) {
			e := newEnvWith(t, func(c *daemon.Config) { c.PmemDir = testutil.Tmpfs(t, "huge=always,size=64m") })
			e.checkCut(size, cut, func(e *env, mem string) {
				var st unix.Stat_t
				if err := unix.Stat(mem, &st); err != nil || st.Blksize != 2<<20 {
					t.Fatalf("the region %s is not in huge pages (st_blksize %d, %v)", mem, st.Blksize, err)
				}
				e.snap("vol", "s", withChunk(4096))
			})
		})
	}
}
