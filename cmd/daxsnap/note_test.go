package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
)

// Ensure that a device that came back degraded says why: a Note line in
// info, and on stderr for table and status, whose stdout stays dmsetup's.
func TestCLI_degradedNote(t *testing.T) {
	c := newCLI(t)
	c.ok("pmem", "create", "r", "--size", "1M")
	path := filepath.Join(c.shm, "daxsnap", "r")
	c.ok("create", "vol", "--table", "0 2048 linear "+path+" 0")
	state := filepath.Dir(c.socket)
	if err := c.d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	d, err := daemon.Start(daemon.Config{StateDir: state, PmemDir: c.shm})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(context.Background())

	code, out, errOut := runIn("", "--socket", c.socket, "status", "vol")
	if code != 0 || out != "0 2048 error \n" {
		t.Fatalf("status: %d %q %q", code, out, errOut)
	}
	if !strings.HasPrefix(errOut, "daxsnap: note: vol: Its table did not load when the daemon started") {
		t.Fatalf("status stderr = %q", errOut)
	}
	info := c.ok("info", "vol")
	if !strings.Contains(info, "\nNote:              Its table did not load") || !strings.Contains(info, path) {
		t.Fatalf("info:\n%s", info)
	}
}
