package daemon_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Ensure that a start that fails at its last listener (a busy NBD
// address, after the DAX session server and the control socket are up)
// takes back what it started: nothing answers on its sockets, and a
// start in the same state directory then succeeds.
func TestDaemon_startFailsAtNBDAndLetsGo(t *testing.T) {
	testutil.RequireRoot(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t, &testutil.LogBuffer{})
	cfg.NBDAddr, cfg.NBDInsecure = busy.Addr().String(), true
	if d, err := daemon.Start(cfg); err == nil {
		d.Shutdown(context.Background())
		t.Fatalf("started with its NBD address %s busy", cfg.NBDAddr)
	} else if !strings.Contains(err.Error(), cfg.NBDAddr) {
		t.Errorf("start with its NBD address busy: %q does not name %s", err, cfg.NBDAddr)
	}
	for sock, network := range map[string]string{
		filepath.Join(cfg.StateDir, daemon.SocketName): "unix",
		daemon.SessionSocketPathIn(cfg.StateDir):       "unixpacket",
	} {
		if c, err := net.Dial(network, sock); err == nil {
			c.Close()
			t.Errorf("after the failed start something still answers on %s", sock)
		}
	}
	cfg.NBDAddr, cfg.NBDInsecure = "", false
	d, err := daemon.Start(cfg)
	if err != nil {
		t.Fatalf("start in the same state directory after a failed start: %v", err)
	}
	d.Shutdown(context.Background())
}
