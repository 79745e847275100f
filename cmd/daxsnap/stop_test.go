package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/testutil"
)

// serveProcess starts this binary as `daxsnap serve --state state ARGS...`
// with its log readable while it runs.
func serveProcess(t *testing.T, state string, args ...string) (*exec.Cmd, *testutil.LogBuffer) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	enc, _ := json.Marshal(append([]string{"serve", "--state", state, "--nbd-addr", ""}, args...))
	cmd.Env = append(os.Environ(), serveEnv+"="+string(enc))
	logs := &testutil.LogBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); syscall.Unmount(filepath.Join(state, "fuse"), syscall.MNT_DETACH) })
	sock := filepath.Join(state, "daxsnap.sock")
	waitFor(t, "the control socket", func() bool {
		code, _, _ := runIn("", "--socket", sock, "version")
		return code == 0
	})
	return cmd, logs
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Ensure that stopping the daemon never breaks a user silently: with
// ext4 mounted on a loop device over a FUSE file, SIGTERM makes the
// daemon refuse new opens, keep serving the mount and say who holds it;
// it exits 0 once the file system is unmounted and the loop device
// detached, and the file system is clean.
func TestCLI_serveStopWaitsForUsers(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "losetup", "mkfs.ext4", "e2fsck", "mount", "umount")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testutil.Skip(t, "no /dev/fuse: modprobe fuse")
	}
	state := t.TempDir()
	img := filepath.Join(t.TempDir(), "vol.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	serve, logs := serveProcess(t, state)
	if code, _, errOut := runIn("", "--state", state, "create", "vol", "--table", "0 131072 linear "+img+" 0"); code != 0 {
		t.Fatal(errOut)
	}
	file := filepath.Join(state, "fuse", "vol")
	attached := testutil.AttachLoop(t, file)
	loop := attached.Dev
	sh(t, "mkfs.ext4", "-q", loop)
	mnt := t.TempDir()
	sh(t, "mount", loop, mnt)
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	if err := os.WriteFile(filepath.Join(mnt, "before"), []byte("written before the stop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "sync")

	serve.Process.Signal(syscall.SIGTERM)
	waitFor(t, "the stop to wait for the loop device", func() bool {
		return strings.Contains(logs.String(), "waiting for the users") && strings.Contains(logs.String(), "loop device "+loop)
	})
	if !strings.Contains(logs.String(), "umount "+mnt) {
		t.Errorf("the log does not say how to let go (umount %s):\n%s", mnt, logs)
	}
	// Still served: the file system works, and syncs to the device.
	if err := os.WriteFile(filepath.Join(mnt, "during"), bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatalf("write while the daemon stops: %v", err)
	}
	sh(t, "sync")
	// Nothing new opens.
	if f, err := os.Open(file); !errors.Is(err, syscall.EBUSY) {
		f.Close()
		t.Errorf("open of a FUSE file while stopping: %v, want EBUSY", err)
	}
	if code, _, errOut := runIn("", "--state", state, "create", "late", "--table", "0 8 zero"); code == 0 || !strings.Contains(errOut, "stopping") {
		t.Errorf("create while stopping: exit %d, %q", code, errOut)
	}

	sh(t, "umount", mnt)
	sh(t, "e2fsck", "-fn", loop)
	if err := attached.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM and the last user gone: %v\n%s", err, logs)
	}
	for _, want := range []string{"the last user let go", "shutdown complete"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs.String(), "loses its device") || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a clean stop broke a user or logged an error:\n%s", logs)
	}
	sh(t, "e2fsck", "-fn", img)
}

// Ensure that --shutdown-timeout forces a stop a user holds up, that the
// log names the user it breaks, and that the exit says so.
func TestCLI_serveShutdownTimeout(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testutil.Skip(t, "no /dev/fuse: modprobe fuse")
	}
	state := t.TempDir()
	serve, logs := serveProcess(t, state, "--shutdown-timeout", "200ms")
	if code, _, errOut := runIn("", "--state", state, "create", "vol", "--table", "0 8 zero"); code != 0 {
		t.Fatal(errOut)
	}
	f, err := os.Open(filepath.Join(state, "fuse", "vol"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	serve.Process.Signal(syscall.SIGTERM)
	if err := serve.Wait(); err == nil {
		t.Fatalf("serve forced to stop exited 0:\n%s", logs)
	}
	for _, want := range []string{"shutdown timeout: forcing the stop", "this user loses its device", "1 open(s) of FUSE file " + filepath.Join(state, "fuse", "vol")} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
}
