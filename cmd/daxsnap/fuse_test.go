package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Ensure that `serve` mounts the FUSE export on STATE/fuse by default,
// that a daemon killed with the mount in place does not keep the next
// one from mounting there, and that a clean stop unmounts.
func TestCLI_serveFUSE(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testutil.Skip(t, "no /dev/fuse: modprobe fuse")
	}
	state := t.TempDir()
	dir := filepath.Join(state, "fuse")
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	sock := filepath.Join(state, "daxsnap.sock")
	up := func() bool {
		code, _, _ := runIn("", "--socket", sock, "version")
		return code == 0
	}

	serve, stderr := daxsnapProcess(t, "serve", "--state", state, "--nbd-addr", "")
	defer serve.Process.Kill()
	waitFor(t, "the control socket", up)
	if code, _, errOut := runIn("", "--state", state, "create", "vol", "--table", "0 8 zero"); code != 0 {
		t.Fatal(errOut)
	}
	fi, err := os.Stat(filepath.Join(dir, "vol"))
	serve.Process.Kill()
	serve.Wait()
	if err != nil || fi.Size() != 4096 {
		t.Fatalf("stat STATE/fuse/vol: %v, %v\n%s", fi, err, stderr)
	}
	if !strings.Contains(stderr.String(), "fuse="+dir) {
		t.Errorf("the serve log line does not name the mount point %s:\n%s", dir, stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the killed daemon's mount: %v, want ENOTCONN", err)
	}
	again, stderr := daxsnapProcess(t, "serve", "--state", state, "--nbd-addr", "")
	defer again.Process.Kill()
	waitFor(t, "the restarted daemon", up)
	_, statErr := os.Stat(filepath.Join(dir, "vol"))
	again.Process.Signal(syscall.SIGTERM)
	if err := again.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr)
	}
	if statErr != nil {
		t.Fatalf("STATE/fuse/vol after a restart over a stale mount: %v\n%s", statErr, stderr)
	}
	if !strings.Contains(stderr.String(), "stale mount") {
		t.Errorf("the stale mount was not reported:\n%s", stderr)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("STATE/fuse after a clean stop: %v, %v; want an empty directory", ents, err)
	}
}
