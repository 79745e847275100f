package lint

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// Module is the module path every rule is relative to.
const Module = "github.com/daxsnap/daxsnap"

// A rule forbids packages matching From to depend (directly or not) on
// packages matching To. Patterns are module-relative; a trailing "/..."
// matches the package and everything under it.
type rule struct {
	From, To []string
	Why      string
}

var lower = []string{"internal/dm/...", "internal/target/...", "internal/exstore/...", "internal/backing/...", "internal/pmem/...", "internal/uffd/..."}

var upper = []string{"internal/daemon/...", "internal/api/...", "internal/export/...", "internal/session/...", "internal/state/...", "client/...", "cmd/..."}

var rules = []rule{
	{From: lower, To: upper, Why: "the core, targets, stores and backing must not depend on the daemon, the API, exports, sessions, state or clients (data flows down)"},
	{From: []string{"internal/export/..."}, To: []string{"internal/daemon/...", "internal/api/...", "internal/session/...", "internal/state/...", "cmd/..."}, Why: "exports sit beside the API, below the daemon"},
	{From: []string{"internal/api/..."}, To: []string{"internal/daemon/...", "internal/export/...", "internal/session/...", "internal/state/...", "internal/target/...", "cmd/..."}, Why: "the API reaches the daemon only through its service interface"},
	{From: []string{"internal/state/..."}, To: []string{"internal/..."}, Why: "state stores records (table text) and imports nothing of daxsnap"},
	{From: []string{"internal/access/..."}, To: []string{"internal/..."}, Why: "access is the permission rule (owner, mode, peer) alone and imports nothing of daxsnap"},
	{From: []string{"client/..."}, To: []string{"internal/dm/...", "internal/daemon/...", "internal/api/...", "internal/export/...", "internal/session/...", "internal/state/...", "internal/target/...", "internal/exstore/...", "internal/backing/...", "cmd/..."}, Why: "the client library speaks wire and uffd only"},
	{From: []string{"internal/...", "client/..."}, To: []string{"cmd/..."}, Why: "nothing imports a command"},
}

func match(pattern, pkg string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
	}
	return pkg == pattern
}

func matchAny(patterns []string, pkg string) bool {
	for _, p := range patterns {
		if match(p, pkg) {
			return true
		}
	}
	return false
}

// targetOf returns the target a package belongs to ("linear" for
// internal/target/linear/...), or "".
func targetOf(pkg string) string {
	rest, ok := strings.CutPrefix(pkg, "internal/target/")
	if !ok {
		return ""
	}
	return strings.SplitN(rest, "/", 2)[0]
}

// Check returns one message per forbidden dependency in deps, which maps a
// module-relative package to its module-relative (transitive) dependencies.
func Check(deps map[string][]string) []string {
	var out []string
	for pkg, ds := range deps {
		for _, d := range ds {
			if d == pkg {
				continue
			}
			for _, r := range rules {
				if matchAny(r.From, pkg) && matchAny(r.To, d) {
					out = append(out, fmt.Sprintf("%s depends on %s: %s", pkg, d, r.Why))
				}
			}
			if a, b := targetOf(pkg), targetOf(d); a != "" && b != "" && a != b && a != "all" {
				out = append(out, fmt.Sprintf("%s depends on %s: a target must not import another target; share code through dm or a new leaf package", pkg, d))
			}
		}
	}
	sort.Strings(out)
	return out
}

// Rel makes an import path module-relative; ok is false outside the module.
func Rel(importPath string) (string, bool) {
	if importPath == Module {
		return ".", true
	}
	rest, ok := strings.CutPrefix(importPath, Module+"/")
	return path.Clean(rest), ok
}
