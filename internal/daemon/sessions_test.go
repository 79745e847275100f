package daemon_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// The test binary doubles as a DAX client (clienttest); init runs before
// TestMain, which belongs to peer_test.go.
func init() {
	if clienttest.IsChild() {
		os.Exit(clienttest.Main())
	}
}

// TestDAXSession_Snapshot maps a linear volume on a memory region through
// a real daemon, takes a snapshot with the daemon's verb while the mapping
// lives (the volume's table becomes snapshot-origin), and checks the
// snapshot holds the memory at snapshot time while the origin gets the
// stores made after it.
func TestDAXSession_Snapshot(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 1 << 20
	e := newEnv(t)
	e.pmemVol("vol", size)
	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map vol 0 %d rw", size)
	c.Do("fill 1")
	if p := e.d.DAXAudit(); len(p) != 0 {
		t.Errorf("audit: %+v", p)
	}
	before := e.read("vol", 0, size)
	if w := binary.LittleEndian.Uint64(before[5*4096:]); w != 1<<32|5 {
		t.Fatalf("block read of page 5 = %#x after the client's fill, want %#x", w, 1<<32|5)
	}
	// The snapshot verb makes the consistent cut itself.
	e.snap("vol", "s1", transient)
	// A mapping made now resolves through snapshot-origin and
	// /dev/mapper/vol-real, and comes protected.
	c2 := clienttest.Start(t, e.d.SessionSocketPath())
	c2.Do("map vol 0 %d rw", size)
	c2.Do("fill 3")
	c2.Do("quit")
	if got := e.read("s1", 0, size); !bytes.Equal(got, before) {
		t.Errorf("snapshot s1 changed by stores through a mapping made after it, first at byte %d", testutil.FirstDiff(got, before))
	}
	c.Do("fill 2")
	if got := e.read("s1", 0, size); !bytes.Equal(got, before) {
		t.Errorf("snapshot s1 differs from the volume at snapshot time, first at byte %d", testutil.FirstDiff(got, before))
	}
	after := e.read("vol", 0, size)
	for p := 0; p < size/4096; p++ {
		if w := binary.LittleEndian.Uint64(after[p*4096:]); w != 2<<32|uint64(p) {
			t.Fatalf("origin page %d = %#x after the client's second fill, want %#x", p, w, 2<<32|uint64(p))
		}
	}
	found := false
	for _, s := range e.d.DAXSessions() {
		if s.PID == c.Cmd.Process.Pid {
			found = len(s.Mappings) == 1 && s.Mappings[0].Device == "vol" && s.Mappings[0].Write
		}
	}
	if !found {
		t.Errorf("DAX sessions = %+v, want the first client's (pid %d) with its mapping of vol", e.d.DAXSessions(), c.Cmd.Process.Pid)
	}
	// The same through the API, as `daxsnap sessions` shows it.
	listed, err := e.c.Sessions(bg)
	if err != nil {
		t.Fatal(err)
	}
	found = false
	for _, s := range listed {
		if s.PID == c.Cmd.Process.Pid && len(s.Mappings) == 1 && s.Mappings[0].Device == "vol" && s.Mappings[0].Length == size &&
			s.Mappings[0].Write && len(s.Problems) == 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("API sessions = %+v, want pid %d mapping all of vol read-write with no audit problem", listed, c.Cmd.Process.Pid)
	}
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.d.SocketPath())
	}}}
	resp, err := hc.Get("http://daxsnap/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"daxsnap_dax_mappings ", "daxsnap_dax_sweeps_total 1", "daxsnap_dax_fault_seconds_count", "daxsnap_dax_cow_faults_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The snapshot's cut: its held phase and the cut's length, counted.
	for _, re := range []string{`(?m)^daxsnap_dax_faults_total [1-9]`, `(?m)^daxsnap_dax_sessions [1-9]`,
		`(?m)^daxsnap_dax_cut_hold_phase_max_seconds [0-9.]*[1-9]`, `(?m)^daxsnap_dax_sweep_max_seconds [0-9.]*[1-9]`, `(?m)^daxsnap_dax_cut_hold_max_seconds [0-9.]*[1-9]`} {
		if !regexp.MustCompile(re).Match(body) {
			t.Errorf("metrics do not match %s:\n%s", re, grepLines(string(body), "daxsnap_dax_"))
		}
	}
	// Removing the snapshot turns vol back into a plain volume under the
	// live mapping; stores keep reaching it.
	if err := e.c.SnapshotRemove(bg, "s1"); err != nil {
		t.Fatal(err)
	}
	c.Do("fill 4")
	if w := binary.LittleEndian.Uint64(e.read("vol", 9*4096, 8)); w != 4<<32|9 {
		t.Errorf("origin page 9 = %#x after the snapshot's removal and another fill, want %#x", w, 4<<32|9)
	}
	c.Do("unmap")
	c.Do("quit")
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestDAXSession_StackedOverOrigin maps "top", a linear table over
// /dev/mapper/vol at an offset, and snapshots vol while the mapping lives:
// stores through top land in vol's memory, so the snapshot must catch them
// as it catches stores through a mapping of vol itself, both for a mapping
// made before the snapshot (swept by its cut) and one made after it
// (protected when it is armed).
func TestDAXSession_StackedOverOrigin(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size, skip = 1 << 20, 8192
	e := newEnv(t)
	e.pmemVol("vol", size)
	e.create("top", fmt.Sprintf("0 %d linear /dev/mapper/vol %d\n", (size-skip)/512, skip/512))
	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map top 0 %d rw", size-skip)
	c.Do("fill 1")
	before := e.read("vol", 0, size)
	if w := binary.LittleEndian.Uint64(before[skip+3*4096:]); w != 1<<32|3 {
		t.Fatalf("vol at top's page 3 = %#x after the client's fill, want %#x", w, 1<<32|3)
	}
	e.snap("vol", "s1", transient)
	c.Do("fill 2")
	if got := e.read("s1", 0, size); !bytes.Equal(got, before) {
		t.Errorf("snapshot s1 of vol changed by stores through top, mapped before it, first at byte %d", testutil.FirstDiff(got, before))
	}
	c2 := clienttest.Start(t, e.d.SessionSocketPath())
	c2.Do("map top 0 %d rw", size-skip)
	c2.Do("fill 3")
	c2.Do("quit")
	if got := e.read("s1", 0, size); !bytes.Equal(got, before) {
		t.Errorf("snapshot s1 of vol changed by stores through top, mapped after it, first at byte %d", testutil.FirstDiff(got, before))
	}
	after := e.read("vol", skip, size-skip)
	for p := 0; p < (size-skip)/4096; p++ {
		if w := binary.LittleEndian.Uint64(after[p*4096:]); w != 3<<32|uint64(p) {
			t.Fatalf("vol at top's page %d = %#x after the fills, want %#x", p, w, 3<<32|uint64(p))
		}
	}
	c.Do("unmap")
	c.Do("quit")
}

// TestDAXSession_NBDThroughout: a three-line linear volume over two
// memory regions, mapped as one slice by two client processes that each
// stream stores through their half (which crosses line boundaries), while
// snapshots are taken and removed with the daemon's verbs and an NBD
// client keeps reading and writing the volume. Every NBD request
// succeeds, every snapshot read over NBD is a prefix of each writer's
// stores, and at the end the mapping and block reads agree page by page.
func TestDAXSession_NBDThroughout(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size, half, pages = 2 << 20, 1 << 20, (1 << 20) / 4096
	e := newEnv(t)
	a, b := e.region("a", 1<<20), e.region("b", 1<<20)
	e.create("vol", fmt.Sprintf("0 1024 linear %s 1024\n1024 2048 linear %s 0\n3072 1024 linear %s 0\n", a, b, a))
	nbdSock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)

	c := [2]*clienttest.Child{clienttest.Start(t, e.d.SessionSocketPath()), clienttest.Start(t, e.d.SessionSocketPath())}
	c[0].Do("map vol 0 %d rw", size) // fill and check the whole slice first
	c[0].Do("fill 7")
	img := e.read("vol", 0, size)
	for p := 0; p < size/4096; p++ {
		if w := binary.LittleEndian.Uint64(img[p*4096:]); w != 7<<32|uint64(p) {
			t.Fatalf("block read of page %d = %#x after a fill through the one-slice mapping, want %#x", p, w, 7<<32|uint64(p))
		}
	}
	c[0].Do("unmap")
	e.must("zero", e.c.WriteData(bg, "vol", 0, make([]byte, size)))
	for i := range c {
		c[i].Do("map vol %d %d rw", i*half, half)
		c[i].Send("stream")
	}
	for i := range c {
		if ans, ok := c[i].Wait(time.Minute); !ok || ans != "ok" {
			t.Fatalf("writer %d: stream = %q", i, ans)
		}
	}

	stop := make(chan struct{})
	nbdErr := make(chan error, 1)
	var nbdOps atomic.Int64
	go func() {
		nbdErr <- func() error {
			nc, err := nbdclient.Dial("unix", nbdSock, "vol")
			if err != nil {
				return err
			}
			defer nc.Close()
			buf := make([]byte, 64<<10)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return nil
				default:
				}
				off := int64(i%32) * int64(len(buf))
				if err := nc.ReadAt(buf, off); err != nil {
					return fmt.Errorf("NBD read at %d: %w", off, err)
				}
				// Writes go to the second word of a page, which the
				// writers never touch.
				if err := nc.WriteAt([]byte{byte(i), 1, 2, 3, 4, 5, 6, 7}, off+8); err != nil {
					return fmt.Errorf("NBD write at %d: %w", off+8, err)
				}
				nbdOps.Add(1)
			}
		}()
	}()

	for n := 1; n <= 5; n++ {
		name := fmt.Sprintf("s%d", n)
		time.Sleep(20 * time.Millisecond)
		e.snap("vol", name, transient)
		nc, err := nbdclient.Dial("unix", nbdSock, name)
		if err != nil {
			t.Fatal(err)
		}
		img := make([]byte, size)
		if err := nc.ReadAt(img, 0); err != nil {
			t.Fatalf("NBD read of snapshot %s: %v", name, err)
		}
		nc.Close()
		for i := 0; i < 2; i++ {
			if err := streamPrefix(img[i*half:(i+1)*half], pages); err != nil {
				t.Errorf("snapshot %s, writer %d's half: %v", name, i, err)
			}
		}
		e.waitOpenCount(name, 0) // the server closes its side after the client
		e.must("snapshot remove", e.c.SnapshotRemove(bg, name))
	}
	// At least one NBD read+write pair while the clients write, however
	// slowly the NBD goroutine runs.
	for deadline := time.Now().Add(time.Minute); nbdOps.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	if err := <-nbdErr; err != nil {
		t.Fatal(err)
	}
	for i := range c {
		c[i].Do("stop")
	}
	t.Logf("%d NBD read+write pairs during 5 snapshots", nbdOps.Load())
	if nbdOps.Load() == 0 {
		t.Error("no NBD request completed while the clients wrote")
	}
	c[1].Do("fill 9")
	got := e.read("vol", half, half)
	for p := 0; p < pages; p++ {
		if w := binary.LittleEndian.Uint64(got[p*4096:]); w != 9<<32|uint64(p) {
			t.Fatalf("block read of page %d of the second half = %#x, want %#x", p, w, 9<<32|uint64(p))
		}
	}
	for i := range c {
		c[i].Do("quit")
	}
}

// streamPrefix checks that img, the first word of each of its pages
// written by clienttest's "stream" (store seq+1 into page seq%pages), holds
// the stores before some point and none after: the largest value M is the
// last store, and every page holds the last store to it at or before M.
func streamPrefix(img []byte, pages int) error {
	var m uint64
	for p := 0; p < pages; p++ {
		m = max(m, binary.LittleEndian.Uint64(img[p*4096:]))
	}
	for p := 0; p < pages; p++ {
		got := binary.LittleEndian.Uint64(img[p*4096:])
		var want uint64
		if k := uint64(p + 1); m >= k {
			want = m - (m-k)%uint64(pages)
		}
		if got != want {
			return fmt.Errorf("page %d holds %d, want %d: not a prefix of the writer's stores (last store in the image: %d)", p, got, want, m)
		}
	}
	return nil
}

// Ensure that streamPrefix accepts exactly the images of a stream cut
// after some store.
func TestStreamPrefix(t *testing.T) {
	const pages = 4
	image := func(words ...uint64) []byte {
		img := make([]byte, pages*4096)
		for p, w := range words {
			binary.LittleEndian.PutUint64(img[p*4096:], w)
		}
		return img
	}
	for _, c := range []struct {
		words []uint64
		ok    bool
	}{
		{[]uint64{0, 0, 0, 0}, true},  // before the first store
		{[]uint64{1, 2, 0, 0}, true},  // after 2 stores
		{[]uint64{5, 6, 3, 4}, true},  // after 6: pages 0 and 1 lapped
		{[]uint64{5, 2, 3, 4}, true},  // after 5
		{[]uint64{1, 0, 3, 0}, false}, // store 3 without store 2
		{[]uint64{5, 6, 3, 0}, false}, // 6 stores, store 4 missing
		{[]uint64{9, 6, 7, 8}, true},  // after 9
		{[]uint64{9, 2, 7, 8}, false}, // page 1 missed store 6
		{[]uint64{1, 6, 7, 8}, false}, // page 0 missed store 5
	} {
		err := streamPrefix(image(c.words...), pages)
		if (err == nil) != c.ok {
			t.Errorf("streamPrefix(%v) = %v, want ok=%v", c.words, err, c.ok)
		}
	}
}

// TestDAXSession_MappedMemoryStays: while a client maps vol through the
// raw slice of Mapping.Bytes with no OnRecall (so its mapping cannot be
// recalled), nothing may move or remove vol's memory under it: a table
// that puts it elsewhere, a removal (plain or forced) and an offline merge
// are refused as busy, naming the client's pid, and vol keeps running its
// table; a snapshot (same memory, through vol-real) is allowed. Once the
// client unmaps, all of it works.
func TestDAXSession_MappedMemoryStays(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 1 << 20
	e := newEnv(t)
	e.pmemVol("vol", size)
	other := e.region("other", size)
	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map vol 0 %d rw", size)
	c.Do("fill 1")
	pid := fmt.Sprintf("pid %d (vol bytes 0+%d)", c.Cmd.Process.Pid, size)
	if in := e.info("vol"); in.OpenCount != 1 {
		t.Errorf("open count %d with one mapping, want 1 (a mapping holds its device open)", in.OpenCount)
	}

	e.must("load", e.c.Load(bg, "vol", wire.Load{Table: linear(other, size/512)}))
	wantCode(t, e.c.Resume(bg, "vol"), wire.CodeBusy, pid, "not given back", "Mapping.Bytes without MapOptions.OnRecall", "unmap")
	if in := e.info("vol"); in.Suspended || !in.InactiveTable {
		t.Fatalf("vol after the refused resume: %+v, want running its old table, the new one still loaded", in)
	}
	e.must("clear", e.c.Clear(bg, "vol"))
	wantCode(t, e.c.Remove(bg, "vol", wire.Remove{}), wire.CodeBusy, "open")
	wantCode(t, e.c.Remove(bg, "vol", wire.Remove{Force: true}), wire.CodeBusy, pid)
	if in := e.info("vol"); in.Suspended || !strings.Contains(e.table("vol", false), "linear") {
		t.Fatalf("vol after the refused forced removal: %+v, table %q", in, e.table("vol", false))
	}

	e.snap("vol", "s1") // the same memory through vol-real: allowed
	c.Do("fill 2")
	_, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
	wantCode(t, err, wire.CodeBusy, pid, "not given back")
	if in := e.info("vol"); in.Suspended {
		t.Fatalf("vol suspended after the refused merge: %+v", in)
	}
	c.Do("fill 3") // the mapping still works

	c.Do("unmap")
	e.waitOpenCount("vol", 0)
	if _, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{}); err != nil {
		t.Fatalf("merge after the client unmapped: %v", err)
	}
	got := e.read("vol", 0, size)
	if w := binary.LittleEndian.Uint64(got[7*4096:]); w != 1<<32|7 {
		t.Errorf("vol page 7 after merging s1 back = %#x, want the snapshot's %#x", w, 1<<32|7)
	}
	e.must("load", e.c.Load(bg, "vol", wire.Load{Table: linear(other, size/512)}))
	e.must("resume", e.c.Resume(bg, "vol"))
	c.Do("quit")
}

// TestDAXSession_Recall: a client that uses its mapping through Access
// gives it back when a table change moves vol's memory (stop the world):
// the resume succeeds, and the client's next Access maps the new memory.
// A client that does not give its mapping back in time makes the change
// fail as busy with nothing changed; a forced removal recalls too.
func TestDAXSession_Recall(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 1 << 20
	e := newEnv(t)
	e.stop()
	// Long enough for a client to answer a recall on a loaded machine;
	// the hold below outlasts it by as much again, which is the time the
	// load and resume have to reach the recall.
	e.cfg.RecallTimeout = 3 * time.Second
	e.start()
	oldMem := e.pmemVol("vol", size)
	other := e.region("other", size)
	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map vol 0 %d rw", size)
	c.Do("access-fill 1")
	e.snap("vol", "s1") // write-protected: the fill below faults and copies
	c.Do("access-fill 2")

	// vol moves to "other": the mapping is recalled, the swap goes through.
	e.must("snapshot remove", e.c.SnapshotRemove(bg, "s1"))
	e.must("load", e.c.Load(bg, "vol", wire.Load{Table: linear(other, size/512)}))
	e.must("resume", e.c.Resume(bg, "vol"))
	if ans := c.Do("recalled"); ans != "true" {
		t.Fatalf("client after the swap: recalled = %q, want true", ans)
	}
	if len(e.d.DAXSessions()[0].Mappings) != 0 {
		t.Fatalf("the daemon still lists the recalled mapping: %+v", e.d.DAXSessions())
	}
	if m := regexp.MustCompile(`(?m)^daxsnap_dax_recalls_total ([0-9]+)`).FindStringSubmatch(e.metrics()); m == nil || m[1] != "1" {
		t.Errorf("daxsnap_dax_recalls_total = %v after one recalled mapping, want 1", m)
	}
	c.Do("access-fill 3") // maps again: the new memory
	got := e.read("vol", 0, size)
	for p := 0; p < size/4096; p++ {
		if w := binary.LittleEndian.Uint64(got[p*4096:]); w != 3<<32|uint64(p) {
			t.Fatalf("vol page %d = %#x after the fill through the re-made mapping, want %#x", p, w, 3<<32|uint64(p))
		}
	}
	old, err := os.ReadFile(oldMem)
	if err != nil {
		t.Fatal(err)
	}
	if w := binary.LittleEndian.Uint64(old[5*4096:]); w != 2<<32|5 {
		t.Errorf("vol's old memory page 5 = %#x, want the last fill before the swap, %#x", w, 2<<32|5)
	}

	// A client that holds its Access past the deadline: busy, unchanged.
	c.Do("access-hold 6000")
	e.must("load", e.c.Load(bg, "vol", wire.Load{Table: linear(oldMem, size/512)}))
	err = e.c.Resume(bg, "vol")
	wantCode(t, err, wire.CodeBusy, fmt.Sprintf("pid %d (vol bytes 0+%d)", c.Cmd.Process.Pid, size), "no answer within the deadline", "nothing was changed")
	if tbl := e.table("vol", false); !strings.Contains(tbl, other) {
		t.Fatalf("vol's live table after the refused swap = %q, want the one over %s", tbl, other)
	}
	e.must("clear", e.c.Clear(bg, "vol"))

	// Forced removal recalls the (re-made) mapping, then wipes the table.
	c.Do("access-fill 4")
	e.must("remove --force", func() error {
		err := e.c.Remove(bg, "vol", wire.Remove{Force: true})
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == wire.CodeBusy && strings.Contains(ae.Message, "open") {
			return nil // wiped, still open until the recalled mapping's close lands
		}
		return err
	}())
	if tbl := e.table("vol", false); !strings.Contains(tbl, "error") {
		t.Fatalf("vol's table after remove --force = %q, want error", tbl)
	}
	e.waitOpenCount("vol", 0)
	e.must("remove", e.c.Remove(bg, "vol", wire.Remove{}))
	if ans, _ := c.Try(10*time.Second, "access-fill 5"); !strings.HasPrefix(ans, "err") || !strings.Contains(ans, "does not exist") {
		t.Errorf("Access after vol's removal = %q, want an error saying it is gone", ans)
	}
	c.Do("quit")
}

// TestDAXSession_RecallStress: four client processes stream stores through
// Access into their quarter of vol while vol's table moves between two
// memory regions again and again (each move recalls every mapping) and an
// NBD client reads throughout. Every move succeeds, and each writer's last
// store lands in the memory vol has at the end: no store went to memory
// the device had left.
func TestDAXSession_RecallStress(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size, quarter = 1 << 20, 1 << 18
	e := newEnv(t)
	regions := [2]string{e.region("a", size), e.region("b", size)}
	e.create("vol", linear(regions[0], size/512))
	var c [4]*clienttest.Child
	for i := range c {
		c[i] = clienttest.Start(t, e.d.SessionSocketPath())
		c[i].Do("map vol %d %d rw", i*quarter, quarter)
		c[i].Do("access-stream")
	}
	stop := make(chan struct{})
	nbdErr := make(chan error, 1)
	go func() {
		nbdErr <- func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				if _, err := e.c.ReadData(bg, "vol", 0, 65536); err != nil {
					return err
				}
			}
		}()
	}()
	moves := 21 // odd: vol ends on the other region than the one it started on
	if testing.Short() {
		moves = 5
	}
	for i := 1; i <= moves; i++ {
		e.must("load", e.c.Load(bg, "vol", wire.Load{Table: linear(regions[i%2], size/512)}))
		if err := e.c.Resume(bg, "vol"); err != nil {
			t.Fatalf("move %d of vol to %s: %v", i, regions[i%2], err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	if err := <-nbdErr; err != nil {
		t.Fatalf("block reads during the moves: %v", err)
	}
	var lasts [len(c)]uint64
	for i := range c {
		fmt.Sscan(c[i].Do("stop"), &lasts[i])
	}
	img := e.read("vol", 0, size)
	for i := range c {
		last := lasts[i]
		if last == 0 {
			t.Fatalf("writer %d stored nothing", i)
		}
		pages := uint64(quarter / 4096)
		p := (last - 1) % pages
		if w := binary.LittleEndian.Uint64(img[i*quarter+int(p)*4096:]); w != last {
			t.Errorf("writer %d's last store (%d, page %d) reads %d from vol's final memory", i, last, p, w)
		}
		c[i].Do("quit")
	}
	t.Logf("%d moves", moves)
}

// metrics returns the daemon's /metrics text.
func (e *env) metrics() string {
	e.t.Helper()
	return scrapeMetrics(e.t, e.d.SocketPath())
}

// scrapeMetrics reads /metrics from the daemon's control socket.
func scrapeMetrics(t testing.TB, socket string) string {
	t.Helper()
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	resp, err := hc.Get("http://daxsnap/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestDAXSession_RecallAtSuspend: in LVM's order (load the new table,
// suspend, resume) the recall happens at suspend, while vol still serves
// I/O, so a writer streaming through Access into a snapshotted vol (its
// stores fault and copy out) is not stuck in a fault the suspension would
// hold. Its last store lands in the memory vol ends on.
func TestDAXSession_RecallAtSuspend(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 1 << 20
	e := newEnv(t)
	e.pmemVol("vol", size)
	other := e.region("other", size)
	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map vol 0 %d rw", size)
	c.Do("access-stream")
	e.snap("vol", "s1") // protects every page: the writer faults its way round
	e.must("load", e.c.Load(bg, "vol", wire.Load{Table: linear(other, size/512)}))
	e.must("suspend", e.c.Suspend(bg, "vol", wire.Suspend{}))
	if ans := c.Do("recalled"); ans != "true" {
		t.Errorf("client after the suspend: recalled = %q, want true", ans)
	}
	e.must("resume", e.c.Resume(bg, "vol"))
	// Wait until the writer stores into vol's new memory (it maps again
	// first), however slowly it runs; a sleep promised nothing under load.
	for deadline := time.Now().Add(time.Minute); bytes.Count(e.read("vol", 0, size), []byte{0}) == size; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the writer stored nothing into vol's new memory within a minute of the resume")
		}
	}
	var last uint64
	fmt.Sscan(c.Do("stop"), &last)
	img := e.read("vol", 0, size)
	if p := (last - 1) % (size / 4096); binary.LittleEndian.Uint64(img[p*4096:]) != last {
		t.Errorf("the writer's last store %d is not on page %d of vol's new memory", last, p)
	}
	c.Do("quit")
}
