package kerneltest

import (
	"strings"
	"testing"
)

// TestKernelBoot boots the kernel with no disk and checks that the script runs,
// its output and exit status come back, and dmsetup works in the guest.
func TestKernelBoot(t *testing.T) {
	k := Require(t)
	r := Boot(t, k, Options{Script: `
echo "hello from $(uname -r)"
dmsetup version
dmsetup targets | sort
exit 3
`})
	t.Logf("guest output:\n%s", r.Output)
	if r.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", r.ExitCode)
	}
	if want := "hello from " + k.Version + "\n"; !strings.HasPrefix(r.Output, want) {
		t.Errorf("output starts %q, want %q", r.Output, want)
	}
	for _, want := range []string{"Driver version:", "snapshot-origin", "snapshot ", "snapshot-merge", "linear"} {
		if !strings.Contains(r.Output, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
