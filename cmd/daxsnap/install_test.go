package main

import (
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/spf13/cobra"
)

// Ensure that `make install DESTDIR=... PREFIX=...` installs a static
// binary that reports the version `git describe` gives, the systemd unit
// naming that binary, a man page for daxsnap and for every verb, and the
// bash, zsh and fish completions.
func TestMake_install(t *testing.T) {
	testutil.RequireTool(t, "make")
	tmp := t.TempDir()
	dest, bin := filepath.Join(tmp, "dest"), filepath.Join(tmp, "build", "daxsnap")
	cmd := exec.Command("make", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	installed := filepath.Join(dest, "usr/bin/daxsnap")
	f, err := elf.Open(installed)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an interpreter: not a static binary (CGO_ENABLED=0)", installed)
		}
	}
	f.Close()
	out, err := exec.Command(installed, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", installed, err)
	}
	if want, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		if got := strings.TrimSpace(string(out)); got != "daxsnap version "+strings.TrimSpace(string(want)) {
			t.Errorf("--version: %q, want git describe's %q", got, want)
		}
	}

	unit, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/daxsnap.service"))
	if err != nil || !strings.Contains(string(unit), "\nExecStart=/usr/bin/daxsnap serve ") {
		t.Errorf("installed unit: %v, want ExecStart=/usr/bin/daxsnap serve ...:\n%s", err, unit)
	}

	pages := []string{"daxsnap.8"}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				pages = append(pages, strings.ReplaceAll(sub.CommandPath(), " ", "-")+".8")
				walk(sub)
			}
		}
	}
	walk((&app{in: strings.NewReader(""), out: io.Discard, err: io.Discard}).root())
	for _, p := range append(pages, "daxsnap-snapshot-create.8") {
		b, err := os.ReadFile(filepath.Join(dest, "usr/share/man/man8", p))
		if err != nil || !strings.Contains(string(b), ".TH \"DAXSNAP\" \"8\"") {
			t.Errorf("man page %s: %v", p, err)
		}
	}
	for _, c := range []string{"bash-completion/completions/daxsnap", "zsh/vendor-completions/_daxsnap", "fish/vendor_completions.d/daxsnap.fish"} {
		if b, err := os.ReadFile(filepath.Join(dest, "usr/share", c)); err != nil || !strings.Contains(string(b), "__complete") {
			t.Errorf("completion %s: %v", c, err)
		}
	}
}
