package daemon_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

const causalWriters = 4

// causalVol makes vol, a linear volume on a memory region, mapped whole by
// causalWriters client processes that append causally ordered records
// (clienttest/causal.go) until stopped. It returns the region's path.
func (e *env) causalVol(size int64) (string, []*clienttest.Child) {
	e.t.Helper()
	mem := e.pmemVol("vol", size)
	var cs []*clienttest.Child
	for w := 0; w < causalWriters; w++ {
		c := clienttest.Start(e.t, e.d.SessionSocketPath())
		c.Do("map vol 0 %d rw", size)
		cs = append(cs, c)
	}
	for w, c := range cs {
		c.Do("causal %d %d", w, causalWriters)
	}
	return mem, cs
}

// checkSnapshotCut reads snapshot name twice, 100 ms apart while the
// writers go on, and says what is wrong: a snapshot must be prefix-closed
// (clienttest.CheckCausal) and must not change.
func (e *env) checkSnapshotCut(name string, size int64) error {
	e.t.Helper()
	time.Sleep(20 * time.Millisecond)
	first := e.read(name, 0, size)
	last, err := clienttest.CheckCausal(first, causalWriters)
	if err != nil {
		return fmt.Errorf("%s is not prefix-closed: %w", name, err)
	}
	time.Sleep(100 * time.Millisecond)
	if again := e.read(name, 0, size); !bytes.Equal(first, again) {
		return fmt.Errorf("%s changed between two reads 100 ms apart (first at byte %d) while the writers went on", name, testutil.FirstDiff(first, again))
	}
	e.t.Logf("%s: writers end at records %v", name, last)
	return nil
}

// checkCut sets up causalVol(size) on e, makes snapshot s of it with
// makeSnap while the writers go on, and checks it as a consistent cut:
// with the cut, s is prefix-closed and stays so, and every store after it
// reaches the origin; with the cut disabled (daemon.DisableCut) the checks
// must catch it.
func (e *env) checkCut(size int64, cut bool, makeSnap func(e *env, mem string)) {
	t := e.t
	t.Helper()
	if !cut {
		defer daemon.DisableCut(e.d)()
	}
	mem, cs := e.causalVol(size)
	time.Sleep(10 * time.Millisecond)
	makeSnap(e, mem)
	err := e.checkSnapshotCut("s", size)
	switch {
	case cut && err != nil:
		t.Error(err)
	case !cut && err == nil:
		t.Error("with the cut disabled the snapshot passed the checks: they cannot catch a broken cut")
	case !cut:
		t.Logf("without the cut (caught, as it must be): %v", err)
	}
	lasts := make([]uint64, causalWriters)
	for w, c := range cs {
		fmt.Sscan(c.Do("stop"), &lasts[w])
	}
	if !cut {
		return
	}
	// Every store after the cut reached the origin.
	last, err := clienttest.CheckCausal(e.read("vol", 0, size), causalWriters)
	if err != nil {
		t.Fatalf("origin after the writers stopped: %v", err)
	}
	for w := range last {
		if last[w] != lasts[w] {
			t.Errorf("origin holds writer %d's records up to %d, want its last, %d", w, last[w], lasts[w])
		}
	}
}

// TestDAXSession_CutEveryWay: a snapshot of mapped memory is a consistent
// cut however it is made: (a) the dmsetup recipe (suspend the origin, load
// snapshot-origin, create the snapshot, resume), (b) the kernel's order
// (the snapshot's table first, the origin reloaded after), (c) the
// `snapshot create` verb. Four writer processes append causally ordered
// records throughout; each snapshot must be prefix-closed and stay as it
// is. With the cut disabled (daemon.DisableCut) each way must be caught.
func TestDAXSession_CutEveryWay(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 1 << 20
	sectors := size / 512
	ways := []struct {
		name string
		make func(e *env, mem string)
	}{
		{"dmsetup", func(e *env, mem string) {
			cow := e.region("cow", size)
			e.must("suspend", e.c.Suspend(bg, "vol", wire.Suspend{}))
			e.must("load", e.c.Load(bg, "vol", wire.Load{Table: fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, mem)}))
			e.create("s", fmt.Sprintf("0 %d snapshot %s %s P 8\n", sectors, mem, cow))
			e.must("resume", e.c.Resume(bg, "vol"))
		}},
		{"kernel-order", func(e *env, mem string) {
			cow := e.region("cow", size)
			e.create("s", fmt.Sprintf("0 %d snapshot %s %s P 8\n", sectors, mem, cow))
			e.must("suspend", e.c.Suspend(bg, "vol", wire.Suspend{}))
			e.must("load", e.c.Load(bg, "vol", wire.Load{Table: fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, mem)}))
			e.must("resume", e.c.Resume(bg, "vol"))
		}},
		{"verb", func(e *env, mem string) { e.snap("vol", "s", withChunk(4096)) }},
	}
	for _, way := range ways {
		for _, cut := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/cut=%v", way.name, cut), func(t *testing.T) {
				newEnv(t).checkCut(size, cut, way.make)
			})
		}
	}
}

// TestDAXSession_SuspendStopsStores: while vol is suspended no store
// reaches its memory, though four client processes keep storing to their
// mappings: two checksums of the memory file taken while suspended are
// equal, and the image is prefix-closed. Loads go on. After the resume
// every writer continues and its later stores land. With the cut disabled
// (daemon.DisableCut) the checksums must differ.
func TestDAXSession_SuspendStopsStores(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	t.Run("cut=false", func(t *testing.T) {
		e := newEnv(t)
		defer daemon.DisableCut(e.d)()
		mem, cs := e.causalVol(1 << 20)
		e.must("suspend", e.c.Suspend(bg, "vol", wire.Suspend{}))
		if same, _, _ := suspendedSums(t, mem); same {
			t.Error("with the cut disabled the memory of suspended vol did not change: the check cannot catch stores")
		}
		e.must("resume", e.c.Resume(bg, "vol"))
		for _, c := range cs {
			c.Do("stop")
		}
	})
	t.Run("cut=true", testSuspendStopsStores)
}

// suspendedSums checksums the memory file twice, 200 ms apart.
func suspendedSums(t *testing.T, mem string) (same bool, img1, img2 []byte) {
	img1 = readFile(t, mem)
	time.Sleep(200 * time.Millisecond)
	img2 = readFile(t, mem)
	return sha256.Sum256(img1) == sha256.Sum256(img2), img1, img2
}

func testSuspendStopsStores(t *testing.T) {
	const size = 1 << 20
	e := newEnv(t)
	mem, cs := e.causalVol(size)
	time.Sleep(20 * time.Millisecond)
	e.must("suspend", e.c.Suspend(bg, "vol", wire.Suspend{}))
	same, img1, img2 := suspendedSums(t, mem)
	if !same {
		t.Errorf("the memory of suspended vol changed between two checksums 200 ms apart (first at byte %d): stores reached it", testutil.FirstDiff(img1, img2))
	}
	at, err := clienttest.CheckCausal(img2, causalWriters)
	if err != nil {
		t.Errorf("memory of suspended vol is not prefix-closed: %v", err)
	}
	// Loads go on: a reader of the progress words sees them.
	for w, c := range cs {
		if got := c.Do("peek %d", 8*w); got != fmt.Sprint(img2[8*w]) {
			t.Errorf("writer %d loads %s from its progress word's first byte while suspended, want %d", w, got, img2[8*w])
		}
	}
	e.must("resume", e.c.Resume(bg, "vol"))
	// Every writer goes on after the resume, however slowly it runs.
	waitProgress(t, func() []byte { return readFile(t, mem) }, at)
	lasts := make([]uint64, causalWriters)
	for w, c := range cs {
		fmt.Sscan(c.Do("stop"), &lasts[w])
		if lasts[w] <= at[w] {
			t.Errorf("writer %d stopped at record %d, no further than %d where the suspend held it", w, lasts[w], at[w])
		}
	}
	last, err := clienttest.CheckCausal(readFile(t, mem), causalWriters)
	if err != nil {
		t.Fatalf("memory after the writers stopped: %v", err)
	}
	for w := range last {
		if last[w] != lasts[w] {
			t.Errorf("memory holds writer %d's records up to %d, want its last, %d", w, last[w], lasts[w])
		}
	}
	t.Logf("suspended at records %v; stopped at %v", at, lasts)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDAXSession_SuspendOverSuspended: suspending a table stacked on a
// device that is already suspended (a user's order, or a restart
// restoring both suspended) must not wait for the lower device's resume:
// the cut asks what memory the stack maps without entering it. A mapping
// of the upper device stays protected (no store lands) while either is
// suspended, and stores land once both resumed.
func TestDAXSession_SuspendOverSuspended(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 1 << 20
	e := newEnv(t)
	mem := e.pmemVol("vol", size)
	e.create("top", linear("/dev/mapper/vol", size/512))
	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map top 0 %d rw", size)
	c.Do("stream")
	e.must("suspend vol", e.c.Suspend(bg, "vol", wire.Suspend{}))
	done := make(chan error, 1)
	// No flush: a flush of top waits for vol, as block I/O does.
	go func() { done <- e.c.Suspend(bg, "top", wire.Suspend{NoFlush: true}) }()
	select {
	case err := <-done:
		e.must("suspend top", err)
	case <-time.After(20 * time.Second):
		t.Fatal("suspending top over suspended vol waits for vol's resume")
	}
	e.must("resume vol", e.c.Resume(bg, "vol"))
	if same, img1, img2 := suspendedSums(t, mem); !same {
		t.Errorf("stores through top reached vol's memory while top was suspended (first at byte %d)", testutil.FirstDiff(img1, img2))
	}
	e.must("resume top", e.c.Resume(bg, "top"))
	var last uint64
	fmt.Sscan(c.Do("stop"), &last)
	img := readFile(t, mem)
	if p := (last - 1) % (size / 4096); binary.LittleEndian.Uint64(img[p*4096:]) != last {
		t.Errorf("the writer's last store %d is not on page %d of vol's memory after the resumes", last, p)
	}
	c.Do("quit")
}
