package lint

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
)

// Module is the module path every package path here is relative to.
const Module = "github.com/daxsnap/daxsnap"

// TableDoc and TableSection name where the layer table lives, relative
// to the module root; every message that asks for an edit of the table
// names them.
const (
	TableDoc     = "docs/architecture.md"
	TableSection = "Layers"
)

// A Row of the layer table: the packages it classifies and the only
// packages they may import. Rows are in layer order, top first; a row
// may allow only packages classified by rows below it, so the table
// itself says that data flows down.
type Row struct {
	Line     int      // line of TableDoc, for messages
	Layer    string   // the layer's name, for readers
	Packages []string // module-relative paths; "p/..." is p and all below it
	Imports  []string // what the packages may import, in the same form
	Why      string
}

// A Table is the allow-list: the rows of TableDoc's TableSection.
type Table []Row

// match reports whether pattern covers pkg and how specifically (the
// length of the pattern's path), so the most specific row classifies.
func match(pattern, pkg string) (int, bool) {
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return len(prefix), pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
	}
	return len(pattern) + 1, pkg == pattern
}

// Classify returns the index of the row that classifies pkg (the one
// with the most specific matching pattern), or -1.
func (t Table) Classify(pkg string) int {
	best, at := -1, -1
	for i, r := range t {
		for _, p := range r.Packages {
			if n, ok := match(p, pkg); ok && n > best {
				best, at = n, i
			}
		}
	}
	return at
}

// allows reports whether row i lets a package import dep.
func (t Table) allows(i int, dep string) bool {
	for _, p := range t[i].Imports {
		if _, ok := match(p, dep); ok {
			return true
		}
	}
	return false
}

func unclassified(pkg string) string {
	return fmt.Sprintf("%s is not classified: add it to the Packages column of a row of the table in %s, section %q (the row of its layer; give it a row of its own if it may import other packages than that row's), and list what it may import", pkg, TableDoc, TableSection)
}

// Check returns one message per import in imports (module-relative
// package → its module-relative direct imports) that the table does not
// allow, and per package that no row classifies.
func (t Table) Check(imports map[string][]string) []string {
	var out []string
	for pkg, deps := range imports {
		i := t.Classify(pkg)
		if i < 0 {
			out = append(out, unclassified(pkg))
			continue
		}
		for _, d := range deps {
			if d == pkg || t.allows(i, d) {
				continue
			}
			out = append(out, fmt.Sprintf("%s imports %s, which its row (%s:%d, layer %s) does not allow: it may import %s. %s",
				pkg, d, TableDoc, t[i].Line, t[i].Layer, orNothing(t[i].Imports), t.advice(i, d)))
		}
	}
	sort.Strings(out)
	return out
}

// advice says what to do about a refused import of dep by row i.
func (t Table) advice(i int, dep string) string {
	j := t.Classify(dep)
	switch {
	case j < 0:
		return unclassified(dep)
	case j <= i:
		return fmt.Sprintf("%s is not below it (%s:%d, layer %s): data flows down, so move the shared code to a package below both", dep, TableDoc, t[j].Line, t[j].Layer)
	default:
		return "Go through what the row allows, or, if this import is right, add it to the row's May import column with the reason in its Why column"
	}
}

func orNothing(list []string) string {
	if len(list) == 0 {
		return "nothing of the module"
	}
	return strings.Join(list, ", ")
}

// Verify checks the table itself: every row classifies something, every
// allowed import is a package classified below the row, and no pattern
// classifies twice. packages are the module's packages, for patterns
// that match none (a package that was removed or renamed).
func (t Table) Verify(packages []string) []string {
	var out []string
	seen := map[string]int{}
	for i, r := range t {
		if len(r.Packages) == 0 {
			out = append(out, fmt.Sprintf("%s:%d: the row classifies no package: name its packages in backquotes", TableDoc, r.Line))
		}
		for _, p := range r.Packages {
			if j, dup := seen[p]; dup {
				out = append(out, fmt.Sprintf("%s:%d: %s is classified again (first at line %d): keep one", TableDoc, r.Line, p, j))
			}
			seen[p] = r.Line
			if !matchesAny(p, packages) {
				out = append(out, fmt.Sprintf("%s:%d: %s matches no package of the module: remove it or fix its path", TableDoc, r.Line, p))
			}
		}
		for _, p := range r.Imports {
			j := t.Classify(strings.TrimSuffix(p, "/..."))
			switch {
			case j < 0:
				out = append(out, fmt.Sprintf("%s:%d: the row may import %s, which no row classifies: fix its path, classify it in a row, or drop it from May import", TableDoc, r.Line, p))
			case j <= i:
				out = append(out, fmt.Sprintf("%s:%d: the row may import %s, which is not below it (line %d): data flows down, so drop it from May import or move the shared code below both", TableDoc, r.Line, p, t[j].Line))
			}
		}
	}
	return out
}

func matchesAny(pattern string, packages []string) bool {
	for _, pkg := range packages {
		if _, ok := match(pattern, pkg); ok {
			return true
		}
	}
	return false
}

var code = regexp.MustCompile("`([^`]+)`")

// ParseTable reads the table of section TableSection of the markdown
// text doc: the first table after the heading "## Layers", with the
// columns Layer, Packages, May import, Why. Package paths are the
// backquoted words of their cells; a May import cell without any allows
// nothing.
func ParseTable(doc []byte) (Table, error) {
	var t Table
	sc := bufio.NewScanner(bytes.NewReader(doc))
	in, header, line := false, false, 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") {
			if in && (header || len(t) > 0) {
				break
			}
			in = strings.TrimSpace(strings.TrimLeft(text, "#")) == TableSection && strings.HasPrefix(text, "## ")
			continue
		}
		if !in || !strings.HasPrefix(text, "|") {
			if in && len(t) > 0 {
				break // the table ended
			}
			continue
		}
		cells := strings.Split(strings.Trim(text, "|"), "|")
		if len(cells) != 4 {
			return nil, fmt.Errorf("%s:%d: a row of the %s table needs 4 cells (Layer | Packages | May import | Why), not %d", TableDoc, line, TableSection, len(cells))
		}
		if !header {
			header = true // the column names
			continue
		}
		if strings.Trim(cells[0], " -:") == "" {
			continue // the separator line
		}
		t = append(t, Row{Line: line, Layer: strings.TrimSpace(cells[0]), Packages: quoted(cells[1]),
			Imports: quoted(cells[2]), Why: strings.TrimSpace(cells[3])})
	}
	if len(t) == 0 {
		return nil, fmt.Errorf("%s has no table under the heading \"## %s\": the import rule reads it from there", TableDoc, TableSection)
	}
	return t, nil
}

func quoted(cell string) []string {
	var out []string
	for _, m := range code.FindAllStringSubmatch(cell, -1) {
		out = append(out, path.Clean(strings.TrimSuffix(m[1], "/..."))+suffix(m[1]))
	}
	return out
}

func suffix(p string) string {
	if strings.HasSuffix(p, "/...") {
		return "/..."
	}
	return ""
}

// Rel makes an import path module-relative; ok is false outside the module.
func Rel(importPath string) (string, bool) {
	if importPath == Module {
		return ".", true
	}
	rest, ok := strings.CutPrefix(importPath, Module+"/")
	return path.Clean(rest), ok
}
