package testutil

import (
	"os"
	"strconv"
	"testing"
)

// CrashEnv names the environment variable that sets how many crash
// images the power-loss tests check (1,000 for a long run).
const CrashEnv = "DAXSNAP_CRASH_ITER"

// CrashIterations is how many crash images a power-loss test checks: 200,
// or $DAXSNAP_CRASH_ITER.
func CrashIterations(t testing.TB) int {
	t.Helper()
	if s := os.Getenv(CrashEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive count of crash images", CrashEnv, s)
		}
		return n
	}
	return 200
}
