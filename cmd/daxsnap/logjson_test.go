package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api/apiclient"
)

// Ensure that under --log-format json every line the daemon logs is a
// JSON object from the configured logger, in a run that makes the
// snapshot target and the exception store log (a merge finishing, a
// snapshot invalidated, a COW whose chunk size overrides the table's),
// and that values are logged as text: addresses, not Go structs, and no
// err attribute without an error.
func TestCLI_logJSON(t *testing.T) {
	state := t.TempDir()
	shm, err := os.MkdirTemp("/dev/shm", "daxsnap-logjson-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	cleanMemCOWDir(t, state)
	serve, stderr := daxsnapProcess(t, "serve", "--state", state, "--log-format", "json", "--fuse", "",
		"--nbd-addr", "127.0.0.1:0", "--nbd-insecure")
	defer serve.Process.Kill()
	sock := filepath.Join(state, "daxsnap.sock")
	waitFor(t, "the control socket", func() bool {
		code, _, _ := runIn("", "--socket", sock, "version")
		return code == 0
	})
	c := &cli{t: t, socket: sock}
	out := c.ok("pmem", "create", "r", "--size", "4M", "--dir", shm)
	_, region, _ := strings.Cut(strings.TrimSpace(out), " at ")
	c.ok("create", "vol", "--table", "0 8192 linear "+region+" 0")
	data := apiclient.New(sock)
	defer data.Close()
	write := func(off, n int64) {
		t.Helper()
		if err := data.WriteData(bg, "vol", off, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}

	c.ok("snapshot", "create", "vol", "s1", "--cow-size", "1M")
	write(0, 64<<10)
	c.ok("snapshot", "merge", "s1") // "merge finished"

	small := filepath.Join(t.TempDir(), "small.cow")
	os.WriteFile(small, make([]byte, 64<<10), 0o600)
	c.ok("snapshot", "create", "vol", "s2", "--cow", small)
	write(0, 1<<20) // more than the COW holds: "invalidating snapshot"
	c.ok("snapshot", "remove", "s2")

	kept := filepath.Join(t.TempDir(), "kept.cow")
	os.WriteFile(kept, make([]byte, 256<<10), 0o600)
	c.ok("snapshot", "create", "vol", "s3", "--cow", kept, "--chunk", "4k")
	c.ok("snapshot", "remove", "s3") // a COW given by the user stays, header and all
	// "chunk size in COW device metadata overrides the table's"
	c.ok("create", "old", "--table", "0 8192 snapshot "+region+" "+kept+" P 16")
	c.ok("remove", "old")

	serve.Process.Signal(syscall.SIGTERM)
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON line: %q (%v)", line, err)
			continue
		}
		msg, _ := rec["msg"].(string)
		seen[msg] = true
		for k, v := range rec {
			if _, obj := v.(map[string]any); obj {
				t.Errorf("%q: %s is logged as a Go struct: %v", msg, k, v)
			}
			if list, ok := v.([]any); ok {
				for _, e := range list {
					if _, obj := e.(map[string]any); obj {
						t.Errorf("%q: %s holds a Go struct: %v", msg, k, e)
					}
				}
			}
			if k == "err" && (v == nil || v == "<nil>" || v == "") {
				t.Errorf("%q: err=%v without an error", msg, v)
			}
		}
	}
	for _, want := range []string{"merge finished", "invalidating snapshot", "chunk size in COW device metadata overrides the table's"} {
		if !seen[want] {
			t.Errorf("no JSON line %q in the log:\n%s", want, stderr)
		}
	}
}
