package daemon_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/client/clienttest"
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
	if os.Geteuid() != 0 {
		t.Skip("needs root: userfaultfd on another process's memory")
	}
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
		t.Errorf("snapshot s1 changed by stores through a mapping made after it, first at byte %d", firstDiff(got, before))
	}
	c.Do("fill 2")
	if got := e.read("s1", 0, size); !bytes.Equal(got, before) {
		t.Errorf("snapshot s1 differs from the volume at snapshot time, first at byte %d", firstDiff(got, before))
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
	listed, err := e.c.Sessions()
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
	for _, re := range []string{`(?m)^daxsnap_dax_faults_total [1-9]`, `(?m)^daxsnap_dax_sessions [1-9]`} {
		if !regexp.MustCompile(re).Match(body) {
			t.Errorf("metrics do not match %s:\n%s", re, grepLines(string(body), "daxsnap_dax_"))
		}
	}
	// Removing the snapshot turns vol back into a plain volume under the
	// live mapping; stores keep reaching it.
	if err := e.c.SnapshotRemove("s1"); err != nil {
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
	if os.Geteuid() != 0 {
		t.Skip("needs root: userfaultfd on another process's memory")
	}
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
		t.Errorf("snapshot s1 of vol changed by stores through top, mapped before it, first at byte %d", firstDiff(got, before))
	}
	c2 := clienttest.Start(t, e.d.SessionSocketPath())
	c2.Do("map top 0 %d rw", size-skip)
	c2.Do("fill 3")
	c2.Do("quit")
	if got := e.read("s1", 0, size); !bytes.Equal(got, before) {
		t.Errorf("snapshot s1 of vol changed by stores through top, mapped after it, first at byte %d", firstDiff(got, before))
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
