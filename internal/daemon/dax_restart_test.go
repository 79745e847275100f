package daemon_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that a daemon restart (kill -9, or a clean stop with SIGTERM)
// while client processes map a volume and store to it without pause lets
// no store escape copy-on-write: a snapshot reads the same before and after
// the restart, the clients' mappings are adopted by the new daemon and
// their writers go on, and a snapshot taken after the restart is a
// consistent cut (prefix-closed causal log). Both ways of using a mapping:
// Mapping.Access, and the raw Bytes slice.
func TestDAXSession_DaemonRestart(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	for _, stop := range []string{"kill", "term"} {
		for _, use := range []string{"access", "raw"} {
			t.Run(stop+"/"+use, func(t *testing.T) { testDaemonRestart(t, stop, use) })
		}
	}
}

// memVolRig starts a daemon (a crashRig) with its state in dir/state,
// killed when the test ends (with its last run's logs if the test
// failed), and creates in it "vol", a linear volume of size bytes on a
// file in pmemDir (tmpfs: DAX-capable, write-protectable).
func memVolRig(t *testing.T, dir string, size int) *crashRig {
	t.Helper()
	g := serveRig(t, dir)
	g.start()
	mem := filepath.Join(pmemDir(t), "vol.mem")
	if err := os.WriteFile(mem, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := g.c.Create(bg, wire.DeviceCreate{Name: "vol", Table: linear(mem, size/512)}); err != nil {
		t.Fatal(err)
	}
	return g
}

// serveRig is a daemon in a child process with its state in dir, not
// started yet, killed at the end.
func serveRig(t *testing.T, dir string) *crashRig {
	g := &crashRig{t: t, state: filepath.Join(dir, "state")}
	t.Cleanup(func() {
		g.kill()
		if t.Failed() {
			t.Logf("daemon logs (last run):\n%s", g.logs)
		}
	})
	return g
}

func testDaemonRestart(t *testing.T, stop, use string) {
	const (
		size    = 1 << 20
		writers = 2
	)
	g := memVolRig(t, t.TempDir(), size)
	sock := daemon.SessionSocketPathIn(g.state)
	var kids []*clienttest.Child
	for w := range writers {
		c := clienttest.Start(t, sock)
		c.Do("map vol 0 %d rw", size)
		if use == "access" {
			c.Do("access-causal %d %d", w, writers)
		} else {
			c.Do("causal %d %d", w, writers)
		}
		kids = append(kids, c)
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := g.c.ReadData(bg, name, 0, size)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		return b
	}
	// Wait until both writers have stored something, so the snapshot cuts
	// a running log.
	waitProgress(t, func() []byte { return read("vol") }, make([]uint64, writers))
	if _, err := g.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "s1", COWSize: 4 * size}); err != nil {
		t.Fatal(err)
	}
	s1 := read("s1")
	if _, err := clienttest.CheckCausal(s1, writers); err != nil {
		t.Fatalf("s1 before the restart: %v", err)
	}

	switch stop {
	case "kill":
		g.kill()
	case "term":
		// The mappings outlive the daemon, so a clean stop does not wait
		// for them.
		g.term(t, "with DAX mappings live (they outlive the daemon: a stop must not wait for them)")
	}
	// The writers run on (or wait) with no daemon for a while; stores that
	// escaped protection would change s1 now.
	time.Sleep(200 * time.Millisecond)
	g.start()
	if got := read("s1"); !bytes.Equal(got, s1) {
		t.Fatalf("snapshot s1 changed across the daemon restart: %d of %d pages differ (first at byte %d)",
			diffPages(got, s1), size/4096, testutil.FirstDiff(got, s1))
	}

	// The clients reconnect and the new daemon adopts their mappings.
	deadline := time.Now().Add(60 * time.Second)
	for {
		adopted := 0
		list, err := g.c.Sessions(bg)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			for _, c := range kids {
				if s.PID == c.Cmd.Process.Pid && len(s.Mappings) == 1 && s.Mappings[0].Device == "vol" && s.Mappings[0].Write &&
					s.Mappings[0].Adopted && s.Mappings[0].OutlivesDaemon {
					adopted++
				}
			}
		}
		if adopted == writers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the clients' mappings were not adopted by the restarted daemon within 60s: sessions %+v", list)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := scrapeMetrics(t, daemon.SocketPathIn(g.state)); !regexp.MustCompile(fmt.Sprintf(`(?m)^daxsnap_dax_adopted_total %d$`, writers)).MatchString(m) {
		t.Errorf("metrics after the adoptions lack daxsnap_dax_adopted_total %d:\n%s", writers, grepLines(m, "adopted"))
	}
	// The writers go on after the restart.
	origin := read("vol")
	if _, err := clienttest.CheckCausal(origin, writers); err != nil {
		// Writers run, so the origin need not be a cut; only its progress matters.
		t.Logf("origin while writers run: %v", err)
	}
	waitProgress(t, func() []byte { return read("vol") }, progress(origin, writers))

	if _, err := g.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "s2", COWSize: 4 * size}); err != nil {
		t.Fatal(err)
	}
	s2 := read("s2")
	if _, err := clienttest.CheckCausal(s2, writers); err != nil {
		t.Fatalf("s2, taken after the restart, is not a consistent cut: %v", err)
	}
	waitProgress(t, func() []byte { return read("vol") }, progress(s2, writers))
	for _, c := range kids {
		c.Do("stop")
	}
	if got := read("s1"); !bytes.Equal(got, s1) {
		t.Fatalf("snapshot s1 changed after the restart: %d pages differ (first at byte %d)", diffPages(got, s1), testutil.FirstDiff(got, s1))
	}
	if got := read("s2"); !bytes.Equal(got, s2) {
		t.Fatalf("snapshot s2 changed: %d pages differ (first at byte %d)", diffPages(got, s2), testutil.FirstDiff(got, s2))
	}
	final := read("vol")
	if _, err := clienttest.CheckCausal(final, writers); err != nil {
		t.Fatalf("origin with the writers stopped: %v", err)
	}
	for _, c := range kids {
		c.Do("unmap")
		c.Do("quit")
	}
	g.term(t, "after the clients quit")
}

// term stops the daemon with SIGTERM and waits (60 s at most) for it to
// exit 0.
func (g *crashRig) term(t *testing.T, when string) {
	t.Helper()
	g.c.Close()
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-g.waitExit:
		g.cmd = nil
		if err != nil {
			t.Fatalf("daemon stop on SIGTERM %s: %v\n%s", when, err, g.logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon did not exit within 60s of SIGTERM %s", when)
	}
}

// progress reads the causal log's progress words (page 0).
func progress(img []byte, writers int) []uint64 {
	p := make([]uint64, writers)
	for w := range p {
		p[w] = binary.LittleEndian.Uint64(img[8*w:])
	}
	return p
}

// waitProgress waits until every writer's progress in read() passes from.
func waitProgress(t *testing.T, read func() []byte, from []uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		now := progress(read(), len(from))
		ok := true
		for w := range from {
			ok = ok && now[w] > from[w]
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("writers made no progress within 60s: progress %v, was %v", now, from)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// diffPages counts the 4 KiB pages where a and b differ.
func diffPages(a, b []byte) int {
	if len(a) != len(b) {
		panic(fmt.Sprintf("diffPages: %d and %d bytes", len(a), len(b)))
	}
	n := 0
	for off := 0; off < len(a); off += 4096 {
		if !bytes.Equal(a[off:off+4096], b[off:off+4096]) {
			n++
		}
	}
	return n
}
