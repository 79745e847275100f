// Package testutil holds helpers shared by tests: requirements that skip a
// test with a reason, or fail it when DAXSNAP_STRICT=1 (set by .ci/run), so
// that CI never passes by skipping a feature.
package testutil

import (
	"os"
	"os/exec"
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
		Skip(t, "needs root (losetup, mounts): run the tests as root")
	}
}
