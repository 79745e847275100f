package session_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKernel_WPPrefix runs the C reproducer bench/uffdwp/wp_prefix (built
// with gcc if present): another process's word stores read through a
// second mapping right after UFFDIO_WRITEPROTECT of the whole range are a
// prefix of them, and the same check does catch a writer that stores each
// word as 8 byte stores (-b, what -race makes of the client's
// PutUint64). This is why the checkers here accept one torn word
// (tornNext).
func TestKernel_WPPrefix(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: userfaultfd")
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc")
	}
	bin := filepath.Join(t.TempDir(), "wp_prefix")
	if out, err := exec.Command(gcc, "-O2", "-Wall", "-o", bin, "../../bench/uffdwp/wp_prefix/wp_prefix.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	run := func(args ...string) (string, int) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &ee) && ee.ExitCode() == 1:
			return string(out), 1
		}
		t.Skipf("wp_prefix %s: %v\n%s", strings.Join(args, " "), err, out)
		return "", 2
	}
	for _, stride := range []string{"8", "4096"} {
		if out, bad := run("-n", "2000", "-s", stride); bad != 0 {
			t.Errorf("word stores, stride %s: an image read after the protect ioctl is not a prefix:\n%s", stride, out)
		} else {
			t.Log(strings.TrimSpace(out))
		}
	}
	// The broken variant tears a word only when the protect lands between
	// a store's bytes. Over 64 pages a run of 2000 cuts caught one in 1 of
	// 20 runs on an idle machine; over 4 the writer comes back to each page
	// 16 times as often, and 30 of 30 runs caught one. Up to ten runs.
	var out string
	for try := 1; try <= 10; try++ {
		var bad int
		if out, bad = run("-n", "2000", "-s", "4096", "-p", "4", "-b"); bad != 0 {
			t.Logf("caught in run %d: %s", try, strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]))
			return
		}
	}
	t.Errorf("byte stores: the check caught no torn word in 10 runs:\n%s", out)
}
