package lint

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADME_commands keeps the README's commands true on a fresh Debian
// machine: it states the Go version go.mod needs, and runs .ci/run in a
// way that works as root (no sudo there) and through sudo (whose
// secure_path drops Go from PATH unless PATH is passed on).
func TestREADME_commands(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	if want := "Go " + string(m[1]) + " or newer"; !strings.Contains(text, want) {
		t.Errorf("README.md does not say %q, the go line of go.mod", want)
	}
	for _, want := range []string{"\nbash .ci/run\n", "\nsudo env \"PATH=$PATH\" bash .ci/run\n", "\ngo run ./cmd/daxsnap demo\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("README.md lacks the command line %q", strings.TrimSpace(want))
		}
	}
	for i, line := range strings.Split(text, "\n") {
		if strings.Contains(line, ".ci/run") && strings.HasPrefix(strings.TrimSpace(line), "sudo") && !strings.Contains(line, `env "PATH=$PATH"`) {
			t.Errorf("README.md:%d: %q runs .ci/run through sudo without passing PATH on: sudo's secure_path drops Go", i+1, line)
		}
	}
}
