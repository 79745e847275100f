package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that every read verb prints JSON with --json.
func TestCLI_json(t *testing.T) {
	c := newCLI(t)
	c.ok("pmem", "create", "r", "--size", "1M")
	c.ok("create", "a", "--table", "0 8 zero", "-u", "ua")
	c.ok("load", "a", "--table", "0 16 zero")

	var infos []wire.Info
	decode(t, c.ok("info", "--json"), &infos)
	if len(infos) != 1 || infos[0].UUID != "ua" || !infos[0].InactiveTable || infos[0].Sectors != 8 {
		t.Fatalf("info --json: %+v", infos)
	}
	decode(t, c.ok("info", "a", "--json"), &infos)
	if len(infos) != 1 || infos[0].Name != "a" {
		t.Fatalf("info a --json: %+v", infos)
	}
	var texts []wire.Text
	decode(t, c.ok("table", "a", "--inactive", "--json"), &texts)
	if len(texts) != 1 || texts[0].Text != "0 16 zero \n" || !texts[0].Inactive {
		t.Fatalf("table --json: %+v", texts)
	}
	decode(t, c.ok("status", "--json"), &texts)
	if len(texts) != 1 || texts[0].Text != "0 8 zero \n" {
		t.Fatalf("status --json: %+v", texts)
	}
	decode(t, c.ok("ls", "--json"), &infos)
	if len(infos) != 1 {
		t.Fatalf("ls --json: %+v", infos)
	}
	var targets []wire.Target
	decode(t, c.ok("targets", "--json"), &targets)
	if len(targets) == 0 {
		t.Fatal("targets --json: none")
	}
	var regions []wire.Pmem
	decode(t, c.ok("pmem", "list", "--json"), &regions)
	if len(regions) != 1 || regions[0].Size != 1<<20 {
		t.Fatalf("pmem list --json: %+v", regions)
	}
	var v struct {
		Client string
		Daemon wire.Version
	}
	decode(t, c.ok("version", "--json"), &v)
	if v.Client != version || v.Daemon.Version != "test" || v.Daemon.API != "v1" {
		t.Fatalf("version --json: %+v", v)
	}
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v in %q", err, s)
	}
}

// Ensure that with --json an error is one JSON line {"error", "code"} on
// stderr, with the daemon's code or the CLI's own, and stdout is empty:
// for every verb, those that print nothing (remove, resume, snapshot
// merge) too, and with --json before the verb as after it.
func TestCLI_jsonErrors(t *testing.T) {
	c := newCLI(t)
	c.ok("create", "a", "--table", "0 8 zero")
	c.ok("create", "b", "--table", "0 8 linear /dev/mapper/a 0")
	for _, tc := range []struct {
		args []string
		code string
		want string
	}{
		{[]string{"--socket", c.socket, "info", "nosuch", "--json"}, "not_found", "nosuch"},
		{[]string{"--socket", c.socket, "snapshot", "list", "--json", "a", "b"}, "invalid_argument", "2 argument(s) given"},
		{[]string{"--socket", c.socket, "ls", "--json", "--bogus"}, "invalid_argument", "unknown flag: --bogus"},
		{[]string{"--socket", c.socket + ".none", "ls", "--json"}, "unreachable", "cannot reach daxsnap"},
		{[]string{"cow", "inspect", "--json", "/nonexistent/x.cow"}, "failed", "/nonexistent/x.cow"},
		{[]string{"--socket", c.socket, "info", "-j", "254", "--json"}, "invalid_argument", "-j MAJOR and -m MINOR"},
		{[]string{"--socket", c.socket, "remove", "nosuch", "--json"}, "not_found", "nosuch"},
		{[]string{"--socket", c.socket, "--json", "remove", "a"}, "busy", "Device or resource busy"},
		{[]string{"--json", "--socket", c.socket, "resume", "nosuch"}, "not_found", "nosuch"},
		{[]string{"--socket", c.socket, "snapshot", "merge", "--json", "nosuch"}, "not_found", "nosuch"},
		{[]string{"--socket", c.socket, "--json", "info", "nosuch"}, "not_found", "nosuch"},
	} {
		code, out, errOut := runIn("", tc.args...)
		var e struct{ Error, Code string }
		if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Fatalf("%q: exit %d, stdout %q, stderr %q: want 1, nothing, one line", tc.args, code, out, errOut)
		}
		if err := json.Unmarshal([]byte(errOut), &e); err != nil || e.Code != tc.code || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%q: stderr %q (%v): want code %q and an error naming %q", tc.args, errOut, err, tc.code, tc.want)
		}
	}
}

// Ensure that an unknown verb is one readable sentence with cobra's
// suggestion, not its multi-line text folded into "; ; Did you mean
// this?; demo;".
func TestCLI_unknownCommand(t *testing.T) {
	// (deps, the example, is a verb now.)
	code, _, errOut := runIn("", "demoo")
	if want := "daxsnap: unknown command \"demoo\" for \"daxsnap\" (did you mean demo?): see `daxsnap --help`\n"; code != 1 || errOut != want {
		t.Fatalf("exit %d, stderr %q; want 1, %q", code, errOut, want)
	}
	code, _, errOut = runIn("", "qqqq")
	if want := "daxsnap: unknown command \"qqqq\" for \"daxsnap\": see `daxsnap --help`\n"; code != 1 || errOut != want {
		t.Fatalf("exit %d, stderr %q; want 1, %q", code, errOut, want)
	}
}
