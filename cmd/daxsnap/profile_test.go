package main

import (
	"net"
	"strings"
	"syscall"
	"testing"
)

// TestProfile_serveOnly: DAXSNAP_PPROF is read by `serve` only. It was
// read at every command's start, so that each CLI command run beside a
// profiled daemon tried to listen on the daemon's address and said it
// could not.
func TestProfile_serveOnly(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0") // the address a daemon profiles on
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	t.Setenv(profileEnv, busy.Addr().String())

	help, stderr := daxsnapProcess(t, "--help")
	if err := help.Wait(); err != nil {
		t.Fatalf("--help: %v\n%s", err, stderr)
	}
	if strings.Contains(stderr.String(), profileEnv) {
		t.Fatalf("`daxsnap --help` acted on %s: %q", profileEnv, stderr)
	}

	serve, logs := serveProcess(t, t.TempDir(), "--fuse", "")
	serve.Process.Signal(syscall.SIGTERM)
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), profileEnv+": no profiles") || !strings.Contains(logs.String(), busy.Addr().String()) {
		t.Fatalf("serve with %s=%s (taken) did not say it could not profile:\n%s", profileEnv, busy.Addr(), logs)
	}
}
