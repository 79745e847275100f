package lint

import (
	"bytes"
	"go/format"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// unformatted lists the Go files under root that gofmt would change (or
// cannot parse), skipping hidden directories and testdata.
func unformatted(t *testing.T, root string) []string {
	t.Helper()
	var bad []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if out, err := format.Source(src); err != nil || !bytes.Equal(out, src) {
			bad = append(bad, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

// TestGofmt keeps every Go file of the module as gofmt writes it.
func TestGofmt(t *testing.T) {
	if bad := unformatted(t, "../.."); len(bad) > 0 {
		t.Errorf("not gofmt-formatted (run gofmt -w on them): %s", strings.Join(bad, " "))
	}
}

// TestGofmt_catchesUnformatted: a file gofmt would change is named; a
// formatted one and a file in testdata are not.
func TestGofmt_catchesUnformatted(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ok.go", "package p\n\nvar x = 1\n")
	write("bad.go", "package p\nvar  y=2\n")
	write("testdata/skip.go", "package p\nvar  z=3\n")
	bad := unformatted(t, dir)
	if len(bad) != 1 || filepath.Base(bad[0]) != "bad.go" {
		t.Errorf("unformatted = %v, want only bad.go", bad)
	}
}
