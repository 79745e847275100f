package fusefs_test

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/fusefs"
)

const childEnv = "DAXSNAP_FUSEFS_TEST_MOUNT"

// TestMain doubles as a daemon that mounts and is then killed, for
// TestMount_staleMount.
func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		mgr := dm.NewManager(dm.NewRegistry(), dm.NewDevicePool(nil))
		if _, err := fusefs.Mount(dir, mgr, fusefs.Options{}); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("mounted\n")
		select {}
	}
	os.Exit(m.Run())
}

// Ensure that a mount left by a daemon that was killed does not keep the
// next one from mounting, and that a live mount is not mounted over.
func TestMount_staleMount(t *testing.T) {
	requireFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+dir)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "mounted" {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child did not mount: %q", line)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	mgr := dm.NewManager(dm.NewRegistry(), dm.NewDevicePool(nil))
	if _, err := fusefs.Mount(dir, mgr, fusefs.Options{Logger: logger}); err == nil || !strings.Contains(err.Error(), "alive") {
		t.Errorf("mount over a live mount: %v, want a refusal", err)
	}
	child.Process.Kill()
	child.Wait()
	if _, err := os.Stat(dir); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the dead mount: %v, want ENOTCONN", err)
	}
	srv, err := fusefs.Mount(dir, mgr, fusefs.Options{Logger: logger})
	if err != nil {
		t.Fatalf("mount over a stale mount: %v", err)
	}
	defer srv.Close()
	if _, err := os.ReadDir(dir); err != nil {
		t.Errorf("readdir of the new mount: %v", err)
	}
}
