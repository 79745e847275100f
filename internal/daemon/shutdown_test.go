package daemon_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that a clean shutdown flushes and lets go of every device and
// removes the socket.
func TestDaemon_shutdownClean(t *testing.T) {
	e := newEnv(t)
	path := e.region("r", mib)
	e.create("low", linear(path, 2048))
	e.create("high", "0 2048 linear /dev/mapper/low 0")
	e.must("write", e.c.WriteData("high", 0, []byte("persist me")))
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
	e.must("suspend", e.c.Suspend("low", wire.Suspend{}))
	go e.c.ReadData("high", 0, 512) // waits for a resume that never comes
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
