package main

import (
	"runtime/debug"
)

func init() {
	bi, _ := debug.ReadBuildInfo() // nil when the binary has none
	version = buildVersion(version, bi)
}

// buildVersion is the version -ldflags "-X main.version=..." set, or else
// what the Go toolchain recorded in the binary: the module version of a
// `go install ...@vX`, or "dev-" and the first 12 digits of the commit it
// was built from (`go build`, `make build`), "-dirty" when the work tree
// had changes. Without either it stays "dev".
func buildVersion(ldflags string, bi *debug.BuildInfo) string {
	if ldflags != "" && ldflags != "dev" {
		return ldflags
	}
	if bi == nil {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "dev"
	}
	v := "dev-" + rev[:min(12, len(rev))]
	if modified == "true" {
		v += "-dirty"
	}
	return v
}
