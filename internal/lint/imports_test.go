package lint

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestImportDirection runs `go list -deps` over the module and fails on any
// dependency that goes up the layers.
func TestImportDirection(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, Module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	deps := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pkg, ok := Rel(fields[0])
		if !ok {
			continue
		}
		for _, d := range fields[1:] {
			if rd, ok := Rel(d); ok {
				deps[pkg] = append(deps[pkg], rd)
			}
		}
	}
	if len(deps) < 3 {
		t.Fatalf("go list found only %d packages of the module: the check would prove nothing", len(deps))
	}
	for _, msg := range Check(deps) {
		t.Error(msg)
	}
}

// TestCheck_catchesViolations shows each rule firing on a made-up graph.
func TestCheck_catchesViolations(t *testing.T) {
	bad := map[string][]string{
		"internal/dm":                 {"internal/export/nbd"},
		"internal/target/linear":      {"internal/target/striped", "internal/dm"},
		"internal/backing":            {"internal/daemon"},
		"internal/export/nbd":         {"internal/daemon"},
		"internal/api":                {"internal/state"},
		"internal/state":              {"internal/dm"},
		"internal/access":             {"internal/dm"},
		"client":                      {"internal/dm"},
		"internal/daemon":             {"cmd/daxsnap"},
		"internal/exstore/persistent": {"internal/session"},
	}
	got := Check(bad)
	for pkg := range bad {
		found := false
		for _, msg := range got {
			if strings.HasPrefix(msg, pkg+" depends on") {
				found = true
			}
		}
		if !found {
			t.Errorf("no violation reported for %s -> %v; got %q", pkg, bad[pkg], got)
		}
	}
	good := map[string][]string{
		"internal/daemon":        {"internal/dm", "internal/export/nbd", "internal/state", "internal/target/all"},
		"internal/target/all":    {"internal/target/linear", "internal/target/striped", "internal/dm"},
		"internal/target/linear": {"internal/dm", "internal/backing"},
		"internal/export/nbd":    {"internal/dm"},
		"cmd/daxsnap":            {"internal/daemon", "client"},
	}
	if msgs := Check(good); len(msgs) != 0 {
		t.Fatalf("allowed graph reported: %q", msgs)
	}
}
