package session_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/session"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// recordsIn returns a configuration that keeps mapping records in dir.
func recordsIn(dir string) func(*session.Config) {
	return func(c *session.Config) { c.Records = dir }
}

// waitFor polls cond until it holds, failing after 30 s with what.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitUserfault waits until a thread of process pid waits in the kernel
// for a userfaultfd to resolve its fault.
func waitUserfault(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a thread of pid %d waiting on a write-protected page", pid), func() bool {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
		for _, p := range tasks {
			if b, _ := os.ReadFile(p); string(b) == "handle_userfault" {
				return true
			}
		}
		return false
	})
}

// sessionOf returns the session of pid srv lists, orphan or not as asked.
func sessionOf(srv *session.Server, pid int, orphan bool) *session.Info {
	for _, in := range srv.Sessions() {
		if in.PID == pid && in.Orphan == orphan {
			return &in
		}
	}
	return nil
}

// recordsOf lists the records in dir of process pid.
func recordsOf(t *testing.T, dir string, pid int) []string {
	t.Helper()
	got, err := filepath.Glob(filepath.Join(dir, strconv.Itoa(pid)+"-*"))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// Ensure that a Go program whose store waits on a protected page inside
// runtime.memmove (copy) while no daemon runs, and which starts a garbage
// collection meanwhile, goes on once a new server starts: the collection
// waits for the copy and stops the library's reconnection with everything
// else, so the server must take the mapping over from its record without
// the program. The snapshot taken before stays exact, and the program's
// library takes the mapping back once it runs again. Without the records
// (or their adoption) the collection never ends.
func TestAdopt_withoutTheProgram(t *testing.T) {
	records := t.TempDir()
	r := newRigWith(t, 4*mib, recordsIn(records), "mem", "cow")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("gc-percent 100") // collections on, whatever GOGC says
	c.Do("map vol 0 %d rw", volSize)
	c.Do("fill 1")
	pid := c.Cmd.Process.Pid
	if got := recordsOf(t, records, pid); len(got) != 1 {
		t.Fatalf("records of pid %d: %v, want one for its mapping", pid, got)
	}
	snap := r.takeSnapshot(t, "snap", "cow", vol)
	before := readAll(t, snap)

	if err := r.srv.Close(); err != nil { // the daemon stops
		t.Fatal(err)
	}
	c.Do("copy %d", 5*pageSize)
	waitUserfault(t, pid)
	c.Send("gc")
	if ans, ok := c.Wait(200 * time.Millisecond); ok {
		t.Fatalf("a collection ended (%q) beside a copy waiting on a protected page: the test does not make the program hang", ans)
	}
	srv := r.restartServerWith(t, recordsIn(records))
	if ans, ok := c.Wait(30 * time.Second); !ok || ans != "ok" {
		t.Fatalf("the collection: %q (answered %v) 30s after the server started, want it done: the server must take the mapping over without the program, whose reconnection the collection stops", ans, ok)
	}
	c.Do("copied")
	waitFor(t, "the program's library takes its mapping over from the server's hold", func() bool {
		in := sessionOf(srv, pid, false)
		return sessionOf(srv, pid, true) == nil && in != nil && len(in.Mappings) == 1 && in.Mappings[0].Adopted
	})
	if st := srv.Stats(); st.Orphans.Load() != 1 || st.Adopted.Load() != 1 {
		t.Errorf("%d mappings adopted, %d of them without their program; want the one, once", st.Adopted.Load(), st.Orphans.Load())
	}
	if got := readAll(t, snap); !bytes.Equal(got, before) {
		t.Fatalf("snapshot changed by the copy made across the restart, first at byte %d", testutil.FirstDiff(got, before))
	}
	if got := readAll(t, vol)[5*pageSize : 6*pageSize]; !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, pageSize)) {
		t.Fatalf("origin page 5 after the copy: first bytes %x, want 0x5a", got[:8])
	}
	c.Do("fill 2") // handled by the program's session now: every page faults again, copied once
	if got := readAll(t, snap); !bytes.Equal(got, before) {
		t.Fatalf("snapshot changed by stores after the take-over, first at byte %d", testutil.FirstDiff(got, before))
	}
	if got := recordsOf(t, records, pid); len(got) != 1 {
		t.Errorf("records of pid %d after the take-over: %v, want one (the session's)", pid, got)
	}
	c.Do("unmap")
	if got := recordsOf(t, records, pid); len(got) != 0 {
		t.Errorf("records of pid %d after its unmap: %v, want none", pid, got)
	}
}

// Ensure that a server takes over only the mappings whose records still
// describe a live mapping: not one whose process ended, nor one whose pid
// now has another start time (reused), nor one whose record names
// another group than the process runs as, nor one unmapped (with a server:
// its record goes; without: the range is unmapped); that a mapping it
// holds for a process is held again by the next server; and that it is
// released when the process ends.
func TestAdopt_staleRecords(t *testing.T) {
	records := t.TempDir()
	r := newRigWith(t, 4*mib, recordsIn(records), "mem", "cow")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	start := func() (*clienttest.Child, int) {
		c := clienttest.Start(t, r.srv.Socket())
		c.Do("map vol 0 %d rw", volSize)
		return c, c.Cmd.Process.Pid
	}
	live, livePID := start()         // taken over
	ended, endedPID := start()       // ends while no server runs
	reused, reusedPID := start()     // its record's start time is changed, as if its pid were reused
	liar, liarPID := start()         // its record names another group than the process's
	unmapped, unmappedPID := start() // unmaps with the server
	closed, closedPID := start()     // unmaps while no server runs
	stopped, stoppedPID := start()   // stopped, then killed while held
	r.takeSnapshot(t, "snap", "cow", vol)

	unmapped.Do("unmap")
	if got := recordsOf(t, records, unmappedPID); len(got) != 0 {
		t.Fatalf("records of pid %d after its unmap: %v, want none", unmappedPID, got)
	}
	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}
	ended.Cmd.Process.Kill()
	ended.Cmd.Wait()
	closed.Do("unmap")
	recs := editRecord(t, records, reusedPID, "start", func(v any) any { return v.(float64) + 1 })
	liarRecs := editRecord(t, records, liarPID, "gid", func(any) any { return 12345 })
	// Stopped, its library cannot take its mapping back.
	if err := stopped.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	srv := r.restartServerWith(t, recordsIn(records))
	waitFor(t, "the live programs' libraries take their mappings back", func() bool {
		for _, pid := range []int{livePID, reusedPID, liarPID} {
			if in := sessionOf(srv, pid, false); in == nil || len(in.Mappings) != 1 || !in.Mappings[0].Adopted {
				return false
			}
		}
		return sessionOf(srv, livePID, true) == nil
	})
	if in := sessionOf(srv, stoppedPID, true); in == nil || len(in.Mappings) != 1 || !in.Mappings[0].Adopted {
		t.Fatalf("stopped pid %d: held session %+v, want its mapping held for it (sessions %+v)", stoppedPID, in, srv.Sessions())
	}
	// live and stopped were taken over; the others not.
	if n := srv.Stats().Orphans.Load(); n != 2 {
		t.Errorf("%d mappings taken over without their programs, want 2 (pids %d and %d); sessions %+v", n, livePID, stoppedPID, srv.Sessions())
	}
	for _, pid := range []int{endedPID, unmappedPID, closedPID} {
		if got := recordsOf(t, records, pid); len(got) != 0 {
			t.Errorf("records of pid %d, which has no mapping: %v, want none", pid, got)
		}
	}
	if got := recordsOf(t, records, reusedPID); len(got) != 1 || got[0] == recs[0] {
		t.Errorf("records of pid %d: %v, want only the one its new session wrote (not %s)", reusedPID, got, recs[0])
	}
	if got := recordsOf(t, records, liarPID); len(got) != 1 || got[0] == liarRecs[0] {
		t.Errorf("records of pid %d: %v, want only the one its new session wrote (not %s)", liarPID, got, liarRecs[0])
	}

	// A server that stops keeps the record of a mapping it holds: the
	// next one holds it again.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if got := recordsOf(t, records, stoppedPID); len(got) != 1 {
		t.Fatalf("records of stopped pid %d after the server that held its mapping stopped: %v, want its one", stoppedPID, got)
	}
	srv = r.restartServerWith(t, recordsIn(records))
	waitFor(t, "the next server holds the stopped process's mapping again", func() bool { return sessionOf(srv, stoppedPID, true) != nil })

	stopped.Cmd.Process.Kill()
	stopped.Cmd.Wait()
	waitFor(t, "the mapping held for a killed process is released", func() bool { return sessionOf(srv, stoppedPID, true) == nil })
	if got := recordsOf(t, records, stoppedPID); len(got) != 0 {
		t.Errorf("records of killed pid %d: %v, want none", stoppedPID, got)
	}
	// The programs taken over and adopted still store through their mappings.
	for _, c := range []*clienttest.Child{live, reused, liar} {
		c.Do("fill 3")
	}
	if got := binary.LittleEndian.Uint64(readAll(t, vol)[pageSize:]); got != 3<<32|1 {
		t.Errorf("origin's word at page 1 = %#x after fill 3, want %#x", got, uint64(3<<32|1))
	}
}

// editRecord changes field key of the one record of pid in dir with edit,
// and returns the record's path (in a slice, as recordsOf does).
func editRecord(t *testing.T, dir string, pid int, key string, edit func(any) any) []string {
	t.Helper()
	recs := recordsOf(t, dir, pid)
	if len(recs) != 1 {
		t.Fatalf("records of pid %d: %v, want one", pid, recs)
	}
	b, err := os.ReadFile(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	rec[key] = edit(rec[key])
	if b, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	return recs
}

// Ensure that a server adopts nothing from a records directory others
// may write in: a record takes a descriptor from a process and maps with
// its rights. The program's library still adopts its mapping.
func TestAdopt_recordsDirOthersMayWrite(t *testing.T) {
	records := t.TempDir()
	r := newRigWith(t, 4*mib, recordsIn(records), "mem", "cow")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	pid := c.Cmd.Process.Pid
	r.takeSnapshot(t, "snap", "cow", vol)
	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(records, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := c.Cmd.Process.Signal(syscall.SIGSTOP); err != nil { // its library cannot adopt first
		t.Fatal(err)
	}
	srv := r.restartServerWith(t, recordsIn(records))
	if err := c.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The server looks at the records before it accepts the library.
	waitFor(t, "the program's library adopts its mapping", func() bool {
		in := sessionOf(srv, pid, false)
		return in != nil && len(in.Mappings) == 1 && in.Mappings[0].Adopted
	})
	if n := srv.Stats().Orphans.Load(); n != 0 {
		t.Fatalf("%d mappings taken over from a records directory of mode 0777, want none", n)
	}
	c.Do("fill 2")
}
