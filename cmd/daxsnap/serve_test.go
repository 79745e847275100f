package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/backup/s3test"
)

// serveEnv makes the test binary run `daxsnap ARGS...` (a JSON array).
const serveEnv = "DAXSNAP_TEST_RUN_ARGS"

func TestMain(m *testing.M) {
	if env := os.Getenv(serveEnv); env != "" {
		var args []string
		if err := json.Unmarshal([]byte(env), &args); err != nil {
			panic(err)
		}
		os.Exit(run(args, os.Stdin, os.Stdout, os.Stderr))
	}
	code := m.Run()
	s3test.Stop() // the S3 server the backup tests started, if any
	os.Exit(code)
}

// daxsnapProcess starts this binary as `daxsnap args...`.
func daxsnapProcess(t *testing.T, args ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	enc, _ := json.Marshal(args)
	cmd.Env = append(os.Environ(), serveEnv+"="+string(enc))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &stderr
}

// waitFor waits until cond holds, for up to a minute: a loaded machine
// may be slow to get there.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Ensure that `serve` comes up, refuses a second daemon on its state,
// keeps devices across a SIGTERM-clean restart, and removes its socket.
func TestCLI_serve(t *testing.T) {
	state := t.TempDir()
	t.Cleanup(func() { syscall.Unmount(filepath.Join(state, "fuse"), syscall.MNT_DETACH) })
	sock := filepath.Join(state, "daxsnap.sock")
	serve, stderr := daxsnapProcess(t, "serve", "--state", state, "--nbd-addr", "")
	defer serve.Process.Kill()
	waitFor(t, "the control socket", func() bool {
		code, _, _ := runIn("", "--socket", sock, "version")
		return code == 0
	})
	if code, _, errOut := runIn("", "--state", state, "create", "kept", "--table", "0 8 zero"); code != 0 {
		t.Fatal(errOut)
	}

	second, stderr2 := daxsnapProcess(t, "serve", "--state", state, "--nbd-addr", "")
	if err := second.Wait(); err == nil || !strings.Contains(stderr2.String(), "another daxsnap serve holds "+state+"/daxsnap.db (pid ") {
		t.Fatalf("second serve: %v, stderr %q", err, stderr2)
	}

	serve.Process.Signal(syscall.SIGTERM)
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "shutdown complete") {
		t.Fatalf("no clean shutdown logged:\n%s", stderr)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("control socket left behind: %v", err)
	}

	again, _ := daxsnapProcess(t, "serve", "--state", state, "--nbd-addr", "")
	defer func() { again.Process.Signal(syscall.SIGINT); again.Wait() }()
	waitFor(t, "the restarted daemon", func() bool {
		code, out, _ := runIn("", "--socket", sock, "ls")
		return code == 0 && out == "kept\t(254:0)\n"
	})
}

// Ensure that the demo works with nothing prepared and leaves nothing behind.
func TestCLI_demo(t *testing.T) {
	before, _ := filepath.Glob("/dev/shm/daxsnap-demo-*")
	code, out, errOut := runIn("", "demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"read it back: identical", "the same bytes are in", "open count is 1",
		"$ daxsnap table demo-vol\n0 131072 linear ", "$ daxsnap status demo-vol\n0 131072 linear \n",
		"Name:              demo-vol\n", "Open count:        0\n", "Where to look next:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	after, _ := filepath.Glob("/dev/shm/daxsnap-demo-*")
	if len(after) > len(before) {
		t.Errorf("demo left %v behind", after)
	}
}

// Ensure that `serve` refuses a truncated state file with an error that
// says what to do, instead of crashing in bbolt (SIGBUS), and that
// `serve --recover` starts from the backup with the devices it records.
func TestCLI_serveRecover(t *testing.T) {
	state := t.TempDir()
	t.Cleanup(func() { syscall.Unmount(filepath.Join(state, "fuse"), syscall.MNT_DETACH) })
	sock := filepath.Join(state, "daxsnap.sock")
	serve, logs := serveProcess(t, state, "--fuse", "")
	if code, _, errOut := runIn("", "--state", state, "create", "kept", "--table", "0 8 zero"); code != 0 {
		t.Fatal(errOut)
	}
	serve.Process.Signal(syscall.SIGTERM)
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, logs)
	}
	db := filepath.Join(state, "daxsnap.db")
	if err := os.Truncate(db, 2*4096); err != nil {
		t.Fatal(err)
	}

	damaged, stderr := daxsnapProcess(t, "serve", "--state", state, "--nbd-addr", "", "--fuse", "")
	err := damaged.Wait()
	if code := damaged.ProcessState.ExitCode(); err == nil || code != 1 {
		t.Fatalf("serve on a truncated state file: %v (exit %d), want exit 1\n%s", err, code, stderr)
	}
	for _, want := range []string{"daxsnap: state file " + db, "truncated", "serve --recover", db + ".bak"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("serve's error lacks %q:\n%s", want, stderr)
		}
	}

	again, stderr := daxsnapProcess(t, "serve", "--state", state, "--nbd-addr", "", "--fuse", "", "--recover")
	defer again.Process.Kill()
	waitFor(t, "the recovered daemon", func() bool {
		code, out, _ := runIn("", "--socket", sock, "ls")
		return code == 0 && out == "kept\t(254:0)\n"
	})
	again.Process.Signal(syscall.SIGINT)
	again.Wait()
	if !strings.Contains(stderr.String(), "state restored from its backup") {
		t.Errorf("serve --recover did not say what it did:\n%s", stderr)
	}
}
