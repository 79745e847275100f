package lint

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// table reads the layer table from the project's docs.
func table(t *testing.T) Table {
	t.Helper()
	doc, err := os.ReadFile("../../" + TableDoc)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := ParseTable(doc)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// modulePackages returns each package of the module (module-relative)
// with its module-relative direct imports, from `go list`; test files'
// imports are not included.
func modulePackages(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, Module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	imports := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pkg, ok := Rel(fields[0])
		if !ok {
			continue
		}
		imports[pkg] = []string{}
		for _, d := range fields[1:] {
			if rd, ok := Rel(d); ok {
				imports[pkg] = append(imports[pkg], rd)
			}
		}
	}
	if len(imports) < 3 {
		t.Fatalf("go list found only %d packages of the module: the check would prove nothing", len(imports))
	}
	return imports
}

// TestImportDirection checks every package of the module against the
// allow-list of docs/architecture.md.
func TestImportDirection(t *testing.T) {
	for _, msg := range table(t).Check(modulePackages(t)) {
		t.Error(msg)
	}
}

// TestTable checks the table itself: each row allows only packages
// classified below it, and names only packages that exist.
func TestTable(t *testing.T) {
	var pkgs []string
	for p := range modulePackages(t) {
		pkgs = append(pkgs, p)
	}
	for _, msg := range table(t).Verify(pkgs) {
		t.Error(msg)
	}
}

// TestCheck_rejectsBadEdges runs the project's table on a made-up graph:
// each edge in it goes against the layers and must be reported, among
// them every edge the old deny-list let through (issue 10, item 6).
func TestCheck_rejectsBadEdges(t *testing.T) {
	tab := table(t)
	bad := [][2]string{
		// accepted by the deny-list
		{"internal/exstore", "internal/dm"},
		{"internal/uffd", "internal/dm"},
		{"internal/export/nbd", "internal/target/linear"},
		{"internal/export/fusefs", "internal/target/all"},
		{"internal/export/fusefs", "internal/export/nbd"},
		{"internal/session", "internal/api"},
		{"internal/api", "internal/backing"},
		{"internal/daemon", "internal/exstore/persistent"},
		{"internal/daemon", "internal/exstore"},
		{"internal/daemon", "internal/target/snapshot"},
		// the snapshot manager reaches the daemon through its Host only
		{"internal/snapshots", "internal/daemon"},
		{"internal/snapshots", "internal/api"},
		// caught by the deny-list too
		{"internal/dm", "internal/export/nbd"},
		{"internal/dm", "internal/target/linear"},
		{"internal/target/linear", "internal/target/striped"},
		{"internal/backing", "internal/daemon"},
		{"internal/export/nbd", "internal/daemon"},
		{"internal/api", "internal/state"},
		{"internal/state", "internal/dm"},
		{"internal/access", "internal/dm"},
		{"client", "internal/dm"},
		{"internal/daemon", "cmd/daxsnap"},
		{"internal/exstore/persistent", "internal/session"},
		{"examples/daxmap", "internal/wire"},
	}
	for _, e := range bad {
		msgs := tab.Check(map[string][]string{e[0]: {e[1]}})
		if len(msgs) != 1 || !strings.HasPrefix(msgs[0], e[0]+" imports "+e[1]+",") {
			t.Errorf("%s -> %s: want one violation, got %q", e[0], e[1], msgs)
		}
	}
	good := map[string][]string{
		"internal/daemon":          {"internal/dm", "internal/export/nbd", "internal/state", "internal/target/all"},
		"internal/target/all":      {"internal/target/linear", "internal/target/striped", "internal/dm"},
		"internal/target/linear":   {"internal/dm", "internal/backing"},
		"internal/target/snapshot": {"internal/dm", "internal/exstore/persistent"},
		"internal/snapshots":       {"internal/dm", "internal/exstore/persistent", "internal/state"},
		"internal/export/nbd":      {"internal/dm"},
		"cmd/daxsnap":              {"internal/daemon", "internal/api"},
		"internal/dm":              {"internal/backing", "internal/dm"},
	}
	if msgs := tab.Check(good); len(msgs) != 0 {
		t.Fatalf("allowed graph reported: %q", msgs)
	}
}

// TestCheck_unclassified shows that a package no row names fails, with a
// message that says where to classify it.
func TestCheck_unclassified(t *testing.T) {
	msgs := table(t).Check(map[string][]string{"internal/newpkg": {"internal/dm"}, "internal/dm": {"internal/newleaf"}})
	if len(msgs) != 2 {
		t.Fatalf("want 2 messages, got %q", msgs)
	}
	for _, m := range msgs {
		for _, want := range []string{"not classified", TableDoc, `"` + TableSection + `"`} {
			if !strings.Contains(m, want) {
				t.Errorf("message %q lacks %q", m, want)
			}
		}
	}
	if !strings.HasPrefix(msgs[0], "internal/dm imports internal/newleaf,") || !strings.HasPrefix(msgs[1], "internal/newpkg is not classified") {
		t.Errorf("messages name the wrong packages: %q", msgs)
	}
}

// TestTable_Verify_catchesBadTables shows the table's own rules firing on
// made-up tables.
func TestTable_Verify_catchesBadTables(t *testing.T) {
	doc := "# x\n\n## Layers\n\ntext\n\n| Layer | Packages | May import | Why |\n|---|---|---|---|\n" +
		"| a | `a` | `b`, `c` | |\n" + // c is classified nowhere
		"| b | `b/...` | `a` | |\n" + // a is above b
		"| c | `gone` | | |\n" + // no such package
		"| d | | | |\n" + // classifies nothing
		"| e | `b/...` | | |\n" + // b/... twice
		"\n## Next\n| x | `y` | | |\n"
	tab, err := ParseTable([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab) != 5 {
		t.Fatalf("parsed %d rows, want 5 (the table under Layers only): %+v", len(tab), tab)
	}
	got := tab.Verify([]string{"a", "b", "b/x"})
	for _, want := range []string{
		":9: the row may import c, which no row classifies",
		":10: the row may import a, which is not below it",
		":11: gone matches no package",
		":12: the row classifies no package",
		":13: b/... is classified again",
	} {
		found := false
		for _, m := range got {
			found = found || strings.Contains(m, want)
		}
		if !found {
			t.Errorf("Verify did not report %q; got %q", want, got)
		}
	}
	if len(got) != 5 {
		t.Errorf("want 5 messages, got %q", got)
	}
}

// TestParseTable_errors shows a missing or malformed table is an error
// that says what is wrong, not an empty allow-list.
func TestParseTable_errors(t *testing.T) {
	for name, doc := range map[string]string{
		"no section":   "# Architecture\n\n| a | `a` | | |\n",
		"no table":     "## Layers\n\ntext only\n## Other\n",
		"wrong column": "## Layers\n| Layer | Packages | Why |\n|---|---|---|\n| a | `a` | x |\n",
	} {
		if tab, err := ParseTable([]byte(doc)); err == nil {
			t.Errorf("%s: no error, table %+v", name, tab)
		}
	}
}
