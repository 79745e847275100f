package main

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/sdnotify"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// unitFile is the shipped systemd unit, relative to this package.
const unitFile = "../../contrib/systemd/daxsnap.service"

// unitSettings reads a unit file's KEY=VALUE lines (every value of a key
// that repeats, in order).
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY=VALUE", path, line)
		}
		set[k] = append(set[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return set
}

// unitCaps turns CapabilityBoundingSet= into setpriv's --bounding-set.
func unitCaps(t *testing.T, set map[string][]string) string {
	t.Helper()
	caps := []string{"-all"}
	for _, v := range set["CapabilityBoundingSet"] {
		for _, c := range strings.Fields(v) {
			caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		}
	}
	if len(caps) == 1 {
		t.Fatal("the unit has no CapabilityBoundingSet=")
	}
	return strings.Join(caps, ",")
}

// Ensure that the unit's ExecStart line, run as systemd would (%S and %t
// expanded, $NOTIFY_SOCKET set, and as root under the unit's capability
// bounding set and no_new_privs), sends READY=1 only once the control
// socket accepts, serves with what the unit leaves it (sockets in the
// runtime directory, a memory region, the FUSE export,
// a snapshot copying on write), and on SIGTERM sends STOPPING=1 and exits
// cleanly.
func TestService_execStart(t *testing.T) {
	set := unitSettings(t, unitFile)
	if got := set["Type"]; len(got) != 1 || got[0] != "notify" {
		t.Fatalf("Type=%v, want notify", got)
	}
	for _, k := range []string{"StateDirectory", "RuntimeDirectory"} {
		if got := set[k]; len(got) != 1 || got[0] != "daxsnap" {
			t.Fatalf("%s=%v, want daxsnap", k, got)
		}
	}
	execStart := set["ExecStart"]
	if len(execStart) != 1 {
		t.Fatalf("ExecStart=%v, want one line", execStart)
	}
	root := t.TempDir()
	stateRoot, runRoot := filepath.Join(root, "lib"), filepath.Join(root, "run")
	line := strings.NewReplacer("%S", stateRoot, "%t", runRoot).Replace(execStart[0])
	argv := strings.Fields(line)
	if filepath.Base(argv[0]) != "daxsnap" || strings.ContainsAny(line, "%$") {
		t.Fatalf("ExecStart=%s: want daxsnap's path and arguments with only %%S and %%t to expand", execStart[0])
	}
	state, run := filepath.Join(stateRoot, "daxsnap"), filepath.Join(runRoot, "daxsnap")
	t.Cleanup(func() { syscall.Unmount(filepath.Join(state, "fuse"), syscall.MNT_DETACH) })

	notifyPath := filepath.Join(root, "notify")
	notifications, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notifications.Close()

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmdline := []string{self, "-test.run=^$"}
	asRoot := os.Geteuid() == 0
	if asRoot {
		testutil.RequireTool(t, "setpriv")
		if len(set["NoNewPrivileges"]) != 1 || set["NoNewPrivileges"][0] != "yes" {
			t.Fatalf("NoNewPrivileges=%v, want yes", set["NoNewPrivileges"])
		}
		cmdline = append([]string{"setpriv", "--no-new-privs", "--bounding-set", unitCaps(t, set), "--"}, cmdline...)
	} else {
		testutil.Skip(t, "not root: the unit's capability bounding set is not tried")
	}
	enc, _ := json.Marshal(argv[1:])
	cmd := exec.Command(cmdline[0], cmdline[1:]...)
	cmd.Env = append(os.Environ(), serveEnv+"="+string(enc), sdnotify.SocketEnv+"="+notifyPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	msg := receiveNotify(t, notifications, exited, &stderr)
	sock := filepath.Join(run, "daxsnap.sock")
	// No wait: READY=1 promises that the socket accepts now.
	if code, _, errOut := runIn("", "--socket", sock, "version"); code != 0 {
		t.Fatalf("after %q the control socket does not answer: %s\n%s", msg, errOut, &stderr)
	}
	if !strings.Contains(msg, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", msg)
	}
	for name, mode := range map[string]os.FileMode{"daxsnap.sock": 0o600, "nbd.sock": 0o666, "dax.sock": 0o666} {
		if fi, err := os.Stat(filepath.Join(run, name)); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s in the runtime directory: %v, %v; want mode %04o", name, fi, err, mode)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "daxsnap.db")); err != nil {
		t.Errorf("the state file is not in the state directory: %v", err)
	}

	shm, err := os.MkdirTemp("/dev/shm", "daxsnap-service-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	c := &cli{t: t, socket: sock}
	out := c.ok("pmem", "create", "r", "--size", "8M", "--dir", shm)
	_, region, _ := strings.Cut(strings.TrimSpace(out), " at ")
	c.ok("create", "vol", "--table", "0 16384 linear "+region+" 0")
	cleanMemCOWDir(t, state)
	c.ok("snapshot", "create", "vol", "snap", "--cow-size", "1M")
	file := filepath.Join(state, "fuse", "vol")
	if err := os.WriteFile(file, []byte("after the snapshot"), 0); err != nil {
		t.Fatalf("write through the FUSE export %s: %v\n%s", file, err, &stderr)
	}
	if st := c.ok("status", "snap"); strings.Contains(st, " 0/") {
		t.Fatalf("a write to the origin copied nothing into the snapshot's COW: %s", st)
	}

	// The kernel sends FUSE's release after close(2) returns; a stop before
	// it arrives waits for that user, and says so.
	openCount := regexp.MustCompile(`(?m)^Open count:\s+0$`)
	waitFor(t, "the FUSE file's release", func() bool { return openCount.MatchString(c.ok("info", "vol")) })

	cmd.Process.Signal(syscall.SIGTERM)
	msg = receiveNotify(t, notifications, exited, &stderr)
	if !strings.Contains(msg, "STOPPING=1") {
		t.Fatalf("after SIGTERM: notification %q, want STOPPING=1", msg)
	}
	if err := <-exited; err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, &stderr)
	}
	if strings.Contains(stderr.String(), "level=WARN") || strings.Contains(stderr.String(), "level=ERROR") {
		t.Errorf("the daemon warned under the unit's restrictions:\n%s", &stderr)
	}
}

// receiveNotify waits for one datagram, or fails if the daemon exits.
func receiveNotify(t *testing.T, c *net.UnixConn, exited <-chan error, stderr *strings.Builder) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			got <- "read: " + err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	select {
	case msg := <-got:
		return msg
	case err := <-exited:
		t.Fatalf("the daemon exited before notifying: %v\n%s", err, stderr)
	}
	return ""
}

// Ensure that systemd accepts the shipped unit (systemd-analyze verify),
// with ExecStart pointing at an executable as `make install` makes it.
func TestService_verify(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze")
	text, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.Replace(string(text), "ExecStart=/usr/local/bin/daxsnap ", "ExecStart="+self+" ", 1)
	if unit == string(text) {
		t.Fatal("the unit's ExecStart does not start with /usr/local/bin/daxsnap, which `make install` rewrites")
	}
	path := filepath.Join(t.TempDir(), "daxsnap.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// Ensure that root's daemon and client default to the unit's directories
// (/var/lib/daxsnap, sockets in /run/daxsnap), other users to
// ./daxsnap-state, and that --state, $DAXSNAP_STATE and --runtime-dir
// override them.
func TestCLI_defaultDirs(t *testing.T) {
	t.Setenv("DAXSNAP_STATE", "")
	defer func(f func() int) { euid = f }(euid)
	for _, tc := range []struct {
		uid  int
		env  string
		args []string
		want string
	}{
		{0, "", nil, "/run/daxsnap/daxsnap.sock"},
		{1000, "", nil, "./daxsnap-state/daxsnap.sock"},
		{0, "", []string{"--state", "/nonexistent/s"}, "/nonexistent/s/daxsnap.sock"},
		{0, "/nonexistent/e", nil, "/nonexistent/e/daxsnap.sock"},
		{0, "", []string{"--state", "/nonexistent/s", "--runtime-dir", "/nonexistent/r"}, "/nonexistent/r/daxsnap.sock"},
		{1000, "", []string{"--runtime-dir", "/nonexistent/r"}, "/nonexistent/r/daxsnap.sock"},
	} {
		euid = func() int { return tc.uid }
		t.Setenv("DAXSNAP_STATE", tc.env)
		code, _, errOut := runIn("", append(tc.args, "ls")...)
		if code != 1 || !strings.Contains(errOut, "cannot reach daxsnap at "+tc.want+":") {
			t.Errorf("uid %d, $DAXSNAP_STATE=%q, %v: exit %d, %q; want it to try %s", tc.uid, tc.env, tc.args, code, errOut, tc.want)
		}
	}
}
