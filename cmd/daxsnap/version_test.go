package main

import (
	"runtime/debug"
	"testing"
)

// Ensure that without -ldflags the version comes from the build info:
// the module version, else the commit (and whether the tree was dirty).
func TestBuildVersion(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	for _, tc := range []struct {
		ldflags string
		bi      *debug.BuildInfo
		want    string
	}{
		{"v1.2.3", vcs("0123456789abcdef0123", "false"), "v1.2.3"},
		{"dev", vcs("0123456789abcdef0123", "false"), "dev-0123456789ab"},
		{"dev", vcs("0123456789abcdef0123", "true"), "dev-0123456789ab-dirty"},
		{"dev", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "v0.4.0"},
		{"dev", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"dev", nil, "dev"},
	} {
		if got := buildVersion(tc.ldflags, tc.bi); got != tc.want {
			t.Errorf("buildVersion(%q, %+v) = %q, want %q", tc.ldflags, tc.bi, got, tc.want)
		}
	}
}
