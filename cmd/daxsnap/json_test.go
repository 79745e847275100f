package main

import (
	"encoding/json"
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
