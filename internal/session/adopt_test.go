package session_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// restartServer starts a new session server on the rig's socket, as a
// restarted daemon does (the devices stay: they are the rig's).
func (r *rig) restartServer(t *testing.T) *session.Server {
	t.Helper()
	return r.restartServerWith(t, nil)
}

// restartServerWith is restartServer with configure applied to the new
// server's configuration (nil: none).
func (r *rig) restartServerWith(t *testing.T, configure func(*session.Config)) *session.Server {
	t.Helper()
	cfg := session.Config{Socket: r.srv.Socket(), Lookup: r.m.Get, OnRemove: r.m.OnRemove}
	if configure != nil {
		configure(&cfg)
	}
	srv, err := session.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.m.SetCutter(srv.Cut)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv
}

// waitAdopted waits until srv lists pid's mapping of device as adopted.
func waitAdopted(t *testing.T, srv *session.Server, pid int, device string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, in := range srv.Sessions() {
			for _, m := range in.Mappings {
				if in.PID == pid && m.Device == device && m.Adopted && m.OutlivesDaemon {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d's mapping of %s not adopted within 30s: sessions %+v", pid, device, srv.Sessions())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Ensure that a store made while no server runs waits, protected, until a
// new server adopts the mapping (the snapshot never sees it, the origin
// gets it), and that a mapping whose device now maps other memory is not
// adopted: the library gives it up as a recall would, and Access says why.
func TestAdopt_ServerRestart(t *testing.T) {
	r := newRig(t, "mem", "cow", "other", "moved")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	other := r.create(t, "other", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("other")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	c.Do("fill 1")
	c2 := clienttest.Start(t, r.srv.Socket())
	c2.Do("map other 0 %d rw", volSize)
	c2.Do("access-fill 1")
	snap := r.takeSnapshot(t, "snap", "cow", vol)
	before := readAll(t, snap)

	if err := r.srv.Close(); err != nil { // the daemon stops: the sessions end
		t.Fatal(err)
	}
	c.Send("poke %d", 5*pageSize) // protected: waits for a server
	if ans, ok := c.Wait(200 * time.Millisecond); ok {
		t.Fatalf("a store to a protected page completed with no server running (%q): it escaped copy-on-write", ans)
	}
	// While no server runs, other's memory moves (a table change the old
	// server could not recall).
	if err := other.Load(fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("moved"))); err != nil {
		t.Fatal(err)
	}
	if err := other.Suspend(dm.SuspendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := other.Resume(); err != nil {
		t.Fatal(err)
	}

	srv := r.restartServer(t)
	if ans, ok := c.Wait(30 * time.Second); !ok || ans != "ok" {
		t.Fatalf("the store waiting for a server: %q (answered %v), want it to complete once the mapping is adopted", ans, ok)
	}
	waitAdopted(t, srv, c.Cmd.Process.Pid, "vol")
	if got := readAll(t, snap); !bytes.Equal(got, before) {
		t.Fatalf("snapshot changed by the store made across the restart, first at byte %d", testutil.FirstDiff(got, before))
	}
	if b := readAll(t, vol)[5*pageSize]; b != 0xa5 {
		t.Fatalf("origin byte %d = %#x after the store, want 0xa5", 5*pageSize, b)
	}
	c.Do("fill 2") // every page faults again and is copied once
	if got := readAll(t, snap); !bytes.Equal(got, before) {
		t.Fatalf("snapshot changed by stores after the adoption, first at byte %d", testutil.FirstDiff(got, before))
	}
	if st := srv.Stats(); st.Adopted.Load() < 1 || st.Faults.Load() == 0 {
		t.Errorf("new server: %d adopted, %d faults; want the adoption and faults on it", st.Adopted.Load(), st.Faults.Load())
	}

	// other's mapping was refused: given up, and Access says why.
	deadline := time.Now().Add(30 * time.Second)
	for c2.Do("recalled") != "true" {
		if time.Now().After(deadline) {
			t.Fatalf("the mapping of other, whose memory moved, is still mapped; sessions %+v", srv.Sessions())
		}
		time.Sleep(5 * time.Millisecond)
	}
	ans, _ := c2.Try(10*time.Second, "access-fill 3")
	if !strings.Contains(ans, "did not take the mapping over") || !strings.Contains(ans, "memory moved") {
		t.Errorf("access-fill after a refused adoption: %q, want the reason", ans)
	}
	if b := readAll(t, other)[0]; b != 0 {
		t.Errorf("other's new memory got a store (%#x) from the mapping of its old memory", b)
	}
	c.Do("unmap")
	c.Do("quit")
	c2.Do("quit")
}

// Ensure that a writer whose fault the old server read but never resolved
// (held by a suspend's cut when the server went) goes on once a new server adopts
// its mapping: adoption wakes it, and it faults again. The child runs
// without asynchronous preemption and without GC, so no signal makes it
// fault again by itself (as a non-Go program's thread would not).
func TestAdopt_WakesWritersLeftWaiting(t *testing.T) {
	r := newRig(t, "mem", "cow")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	t.Setenv("GODEBUG", "asyncpreemptoff=1")
	t.Setenv("GOGC", "off")
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	c.Do("fill 1")
	snap := r.takeSnapshot(t, "snap", "cow", vol)
	before := readAll(t, snap)

	// Suspending the volume cuts its memory: faults are held until the
	// resume.
	if err := vol.Suspend(dm.SuspendOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Send("poke %d", 3*pageSize)
	deadline := time.Now().Add(30 * time.Second)
	for r.srv.Stats().Held.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the store's fault was not held within 30s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := r.srv.Close(); err != nil { // the server goes with the fault read and unresolved
		t.Fatal(err)
	}
	if err := vol.Resume(); err != nil {
		t.Fatal(err)
	}
	srv := r.restartServer(t)
	waitAdopted(t, srv, c.Cmd.Process.Pid, "vol")
	if ans, ok := c.Wait(30 * time.Second); !ok || ans != "ok" {
		t.Fatalf("the writer left waiting by the old server: %q (answered %v) 30s after its mapping was adopted, want it woken", ans, ok)
	}
	if got := readAll(t, snap); !bytes.Equal(got, before) {
		t.Fatalf("snapshot changed, first at byte %d", testutil.FirstDiff(got, before))
	}
	if b := readAll(t, vol)[3*pageSize]; b != 0xa5 {
		t.Fatalf("origin byte %d = %#x, want the store's 0xa5", 3*pageSize, b)
	}
	c.Do("unmap")
	c.Do("quit")
}
