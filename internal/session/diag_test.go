package session_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// TestDiag_MemoryAfterProtect is the diagnostic of a since-explained issue
// (docs/dax.md): three writers stream; 60 times, every mapping is
// write-protected with all faults held (no snapshot, so nothing is copied
// or un-protected in between), and the volume's memory, read right then,
// must be a prefix of each writer's stores. Under -race about 1 image in
// 150 holds the next write half stored: -race builds the client's
// PutUint64 as 8 byte stores, and the protect can land between them. The
// check accepts that torn word (tornNext) and logs how many it saw. Run it
// with DAXSNAP_DIAG=1.
func TestDiag_MemoryAfterProtect(t *testing.T) {
	if os.Getenv("DAXSNAP_DIAG") == "" {
		t.Skip("diagnostic (docs/dax.md, torn words under -race): set DAXSNAP_DIAG=1 to run it")
	}
	r := newRig(t, "mem")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	const part = volSize / 4
	var cs []*clienttest.Child
	for i := 0; i < 3; i++ {
		c := clienttest.Start(t, r.srv.Socket())
		c.Do("map vol %d %d rw", i*part, part)
		c.Do("stream")
		cs = append(cs, c)
	}
	bad, good := 0, 0
	for k := 0; k < 60; k++ {
		time.Sleep(2 * time.Millisecond)
		// A suspend cuts: every mapping protected, all faults held, until
		// the resume; the memory file is read in between.
		if err := vol.Suspend(dm.SuspendOptions{}); err != nil {
			t.Fatal(err)
		}
		img, err := os.ReadFile(r.path("mem"))
		if err != nil {
			t.Fatal(err)
		}
		if err := vol.Resume(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if err := prefixErr(img[i*part : (i+1)*part]); err != nil {
				bad++
				if bad < 4 {
					t.Log(err)
				}
			} else {
				good++
			}
		}
	}
	t.Logf("%d images, %d with the next write's word half stored (torn, accepted)", bad+good, tornSeen.Load())
	if bad > 0 {
		t.Errorf("after protect, before any resolution: %d images not a prefix of their writer's stores (%d are)", bad, good)
	}
	for _, c := range cs {
		c.Do("stop")
		c.Do("quit")
	}
}

func prefixErr(img []byte) error {
	pages := uint64(len(img) / pageSize)
	var j uint64
	for p := 0; p < int(pages); p++ {
		j = max(j, word(img, p))
	}
	if j == 0 {
		return nil
	}
	j--
	for p := uint64(0); p < pages; p++ {
		want := uint64(0)
		if j >= p {
			want = j - (j-p)%pages + 1
		}
		if got := word(img, int(p)); got != want && !tornNext(got, want, j, p, pages) {
			return fmt.Errorf("page %d holds %d, want %d (cut %d)", p, got, want, j)
		}
	}
	return nil
}
