// Package testutil holds helpers shared by tests: requirements that skip a
// test with a reason, or fail it when DAXSNAP_STRICT=1 (set by .ci/run), so
// that CI never passes by skipping a feature.
package testutil

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Strict reports whether skips must become failures.
func Strict() bool { return os.Getenv("DAXSNAP_STRICT") == "1" }

// Skip skips the test with reason, or fails it in strict mode.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if Strict() {
		t.Fatalf("DAXSNAP_STRICT=1: cannot skip: %s", reason)
	}
	t.Skip(reason)
}

// RequireTool skips (or fails, in strict mode) unless every tool is on PATH.
func RequireTool(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Skip(t, tool+" is not installed (apt-get install the package that provides it; .ci/run does)")
		}
	}
}

// RequireRoot skips (or fails, in strict mode) unless running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root (losetup, mounts, userfaultfd on other processes): run the tests as root")
	}
}

// Meminfo returns a /proc/meminfo field's number (kB for sizes, a count
// for HugePages_*).
func Meminfo(t testing.TB, key string) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			v, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no %s in /proc/meminfo", key)
	return 0
}
