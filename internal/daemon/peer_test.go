package daemon_test

import (
	"encoding/json"
	"fmt"
	"github.com/daxsnap/daxsnap/internal/backup/s3test"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// childEnv makes the test binary act as an unprivileged API client.
const childEnv = "DAXSNAP_TEST_PEER_SOCKET"

func TestMain(m *testing.M) {
	if sock := os.Getenv(childEnv); sock != "" {
		os.Exit(peerChild(sock))
	}
	if arg := os.Getenv(trickleChildEnv); arg != "" {
		os.Exit(trickleChild(arg))
	}
	if arg := os.Getenv(readChildEnv); arg != "" {
		os.Exit(readChild(arg))
	}
	if arg := os.Getenv(ckChildEnv); arg != "" {
		os.Exit(ckChild(arg))
	}
	if cfg := os.Getenv(serveChildEnv); cfg != "" {
		os.Exit(serveChild(cfg))
	}
	code := m.Run()
	s3test.Stop() // the S3 server the checkpoint tests started, if any
	os.Exit(code)
}

// peerResult is what the child reports.
type peerResult struct {
	UID         int
	ReadErr     string
	WriteCode   string
	WriteStatus int
	WriteErr    string
}

// peerChild reads (allowed) and creates a device (refused) and prints
// what happened as JSON.
func peerChild(sock string) int {
	c := apiclient.New(sock)
	res := peerResult{UID: os.Getuid()}
	if _, err := c.Devices(bg); err != nil {
		res.ReadErr = err.Error()
	}
	_, err := c.Create(bg, wire.DeviceCreate{Name: "intruder", Table: "0 8 zero"})
	if ae, ok := err.(*api.Error); ok {
		res.WriteCode, res.WriteStatus, res.WriteErr = ae.Code, ae.Status, ae.Message
	} else if err != nil {
		res.WriteErr = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// Ensure that a caller with another uid may read but not change anything
// (SO_PEERCRED), with a message that says who may.
func TestDaemon_peerCredentials(t *testing.T) {
	testutil.RequireRoot(t)
	e := newEnv(t)
	// Let uid 65534 reach the socket and run a copy of this binary.
	openToOthers(e.cfg.StateDir)
	os.Chmod(e.d.SocketPath(), 0o666)
	bin := copyTestBinary(t)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+e.d.SocketPath())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child as uid 65534: %v (%s)", err, out)
	}
	var res peerResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	if res.UID != 65534 || res.ReadErr != "" {
		t.Fatalf("child: %+v, want uid 65534 reading freely", res)
	}
	if res.WriteStatus != 403 || res.WriteCode != wire.CodePermission ||
		!strings.Contains(res.WriteErr, "uid 65534") || !strings.Contains(res.WriteErr, "root or uid 0") {
		t.Fatalf("child create: %+v, want 403 permission_denied naming who may", res)
	}
	if devs, _ := e.c.Devices(bg); len(devs) != 0 {
		t.Fatalf("the refused create made %+v", devs)
	}
}

// copyTestBinary copies this test binary where any user may run it.
func copyTestBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for d := dir; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	dst := filepath.Join(dir, "peer.test")
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(fmt.Errorf("copy test binary: %w", err))
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}
