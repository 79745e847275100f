package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that a clean shutdown flushes and lets go of every device and
// removes the socket.
func TestDaemon_shutdownClean(t *testing.T) {
	e := newEnv(t)
	path := e.region("r", mib)
	e.create("low", linear(path, 2048))
	e.create("high", "0 2048 linear /dev/mapper/low 0")
	e.must("write", e.c.WriteData(bg, "high", 0, []byte("persist me")))
	sock := e.d.SocketPath()
	e.stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !strings.HasPrefix(string(b), "persist me") {
		t.Fatalf("region after shutdown: %v", err)
	}
	if !strings.Contains(e.logs.String(), "shutdown complete") {
		t.Fatalf("no clean shutdown in the logs:\n%s", e.logs)
	}
}

// Ensure that I/O held by a device the user left suspended does not make
// the shutdown hang, and that the logs say what to do next time.
func TestDaemon_shutdownWithHeldIO(t *testing.T) {
	e := newEnv(t)
	e.create("low", "0 8 zero")
	e.create("high", "0 8 linear /dev/mapper/low 0")
	e.must("suspend", e.c.Suspend(bg, "low", wire.Suspend{}))
	go e.c.ReadData(bg, "high", 0, 512) // waits for a resume that never comes
	time.Sleep(50 * time.Millisecond)

	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	d := e.d
	e.d = nil // this test stops it
	go func() { done <- d.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("shutdown hung on I/O held by a suspended device")
	}
	if !strings.Contains(e.logs.String(), "sits on a suspended device") {
		t.Fatalf("no advice in the logs:\n%s", e.logs)
	}
}

// Ensure that a stop waits for the users of the devices: nothing new
// opens (NBD, API creations), the NBD client already connected goes on
// being served, the log says every so often who holds what, and the wait
// ends when the client disconnects.
func TestDaemon_drainWaitsForUsers(t *testing.T) {
	defer daemon.SetDrainLogEvery(20 * time.Millisecond)()
	e := newEnv(t)
	path := e.region("r", mib)
	e.create("vol", linear(path, 2048))
	sock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	c, err := nbdclient.Dial("unix", sock, "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	holder := fmt.Sprintf("NBD client uid %d (gid %d, pid %d)", os.Getuid(), os.Getgid(), os.Getpid())

	done := make(chan []string, 1)
	go func() { done <- e.d.Drain(context.Background()) }()
	waitLog(t, e, "stopping: still in use", holder)
	if c2, err := nbdclient.Dial("unix", sock, "vol"); err == nil || !strings.Contains(err.Error(), "stopping") {
		if c2 != nil {
			c2.Close()
		}
		t.Errorf("a new NBD client while stopping: %v, want a refusal that says the daemon is stopping", err)
	}
	_, err = e.c.Create(bg, wire.DeviceCreate{Name: "late", Table: "0 8 zero"})
	wantCode(t, err, wire.CodeBusy, "stopping")
	if err := c.WriteAt([]byte("still served"), 0); err != nil {
		t.Fatalf("write by the connected client while stopping: %v", err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case broken := <-done:
		t.Fatalf("the stop stopped waiting with the client connected (broke %v)", broken)
	default:
	}
	c.Close()
	select {
	case broken := <-done:
		if len(broken) != 0 {
			t.Fatalf("a clean stop broke %v", broken)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stop still waits 30s after the last user left")
	}
	if got := e.read("vol", 0, 12); string(got) != "still served" {
		t.Fatalf("vol = %q", got)
	}
}

// Ensure that forcing a stop names every user it breaks.
func TestDaemon_drainForced(t *testing.T) {
	e := newEnv(t)
	path := e.region("r", mib)
	e.create("vol", linear(path, 2048))
	c, err := nbdclient.Dial("unix", filepath.Join(e.cfg.StateDir, daemon.NBDSocketName), "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	force, cancel := context.WithCancel(context.Background())
	done := make(chan []string, 1)
	go func() { done <- e.d.Drain(force) }()
	waitLog(t, e, "waiting for the users")
	cancel()
	holder := fmt.Sprintf("NBD client uid %d (gid %d, pid %d)", os.Getuid(), os.Getgid(), os.Getpid())
	select {
	case broken := <-done:
		if len(broken) != 1 || !strings.Contains(broken[0], holder) {
			t.Fatalf("broken %v, want the NBD client", broken)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("forcing did not end the wait")
	}
	waitLog(t, e, "this user loses its device", holder)
}

// waitLog waits until a line of the daemon's log holds every fragment.
func waitLog(t *testing.T, e *env, fragments ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, line := range strings.Split(e.logs.String(), "\n") {
			if hasAll(line, fragments...) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in 30s:\n%s", fragments, e.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Ensure that a stop does not wait for a DAX mapping that outlives the
// daemon (the client keeps it write-protected and hands it to the next
// one: daxMappingHoldsStop), but maps nothing new while it waits for
// another user (an NBD client here), and the mapping goes on working.
func TestDaemon_drainWithDAXMappings(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 1 << 20
	e := newEnv(t)
	e.pmemVol("vol", size)
	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map vol 0 %d rw", size)
	c.Do("fill 1")
	nc, err := nbdclient.Dial("unix", filepath.Join(e.cfg.StateDir, daemon.NBDSocketName), "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	done := make(chan []string, 1)
	go func() { done <- e.d.Drain(context.Background()) }()
	waitLog(t, e, "waiting for the users", "NBD client", "users=1")
	if strings.Contains(e.logs.String(), "DAX mapping of vol") {
		t.Errorf("the stop waits for a mapping that outlives the daemon:\n%s", e.logs)
	}
	c.Do("fill 2") // still served
	if ans, ok := c.Try(30*time.Second, "map vol 0 %d rw", size); !ok || !hasAll(ans, "code busy", "stopping") {
		t.Errorf("map while stopping: %q, %v; want a busy refusal saying the daemon stops", ans, ok)
	}
	nc.Close()
	select {
	case broken := <-done:
		if len(broken) != 0 {
			t.Fatalf("a clean stop broke %v", broken)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stop still waits 30s after the NBD client left")
	}
	c.Do("quit") // the refused map left the child without its mapping handle
}
