package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that snapshot list takes lvs's -o fields and --units, and that a
// snapshot made with --permission r is read-only: its writes fail, it
// still keeps the origin's old data, lv_attr says r, and info says
// READ-ONLY.
func TestCLI_lvsHabits(t *testing.T) {
	c := newCLI(t)
	c.ok("pmem", "create", "r", "--size", "8M")
	path := filepath.Join(c.shm, "daxsnap", "r")
	c.ok("create", "vol", "--table", "0 8192 linear "+path+" 0")
	client := apiclient.New(c.socket)
	t.Cleanup(client.Close)
	ctx := context.Background()
	old := bytes.Repeat([]byte("old!"), 1024)
	if err := client.WriteData(ctx, "vol", 0, old); err != nil {
		t.Fatal(err)
	}
	c.ok("snapshot", "create", "vol", "ro", "--cow-size", "8M", "--permission", "r")
	c.ok("snapshot", "create", "vol", "rw", "--cow-size", "4M")
	if err := client.WriteData(ctx, "vol", 0, bytes.Repeat([]byte("new!"), 1024)); err != nil {
		t.Fatal(err)
	}
	if got, err := client.ReadData(ctx, "ro", 0, int64(len(old))); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("the read-only snapshot does not hold the origin's old data: %v", err)
	}
	err := client.WriteData(ctx, "ro", 0, old)
	if code := errorCode(err); code != wire.CodeReadOnly && code != wire.CodePermission {
		t.Fatalf("a write to the read-only snapshot: %v (code %s), want it refused", err, code)
	}
	if out := c.ok("info", "ro"); !strings.Contains(out, "State:             ACTIVE (READ-ONLY)\n") {
		t.Errorf("info ro:\n%s", out)
	}
	golden(t, "snapshot list -o ... --units k", c.ok("snapshot", "list", "-o", "lv_name,lv_attr,lv_size,origin,chunk_size", "--units", "k", "--noheadings", "--separator", ","),
		"ro,sri-a-s---,8192.00k,vol,4.00k\nrw,swi-a-s---,4096.00k,vol,4.00k\n")
	golden(t, "snapshot list -o +chunk_size --units s", c.ok("snapshot", "list", "-o", "+chunk_size", "--units", "s"),
		"LV Attr       LSize  Origin Data% Chunk\nro sri-a-s--- 16384S vol     0.15    8S\nrw swi-a-s---  8192S vol     0.29    8S\n")
	if out := c.ok("snapshot", "list", "-o", "lv_name,lv_size", "--noheadings"); out != "ro:8.00m\nrw:4.00m\n" {
		t.Errorf("snapshot list -o lv_name,lv_size --noheadings: %q", out)
	}
	c.fail("unrecognised field \"size\"", "snapshot", "list", "-o", "size")
	c.fail("--units \"x\"", "snapshot", "list", "-o", "lv_size", "--units", "x")
	c.fail("--permission \"w\"", "snapshot", "create", "vol", "bad", "--permission", "w")
}

// Ensure that set changes a device's owner, group and mode in place:
// what is not given stays, a bad mode or no change at all is refused,
// and the device and its table are the same device (open count, table).
func TestCLI_set(t *testing.T) {
	c := newCLI(t)
	c.ok("create", "vol", "--table", "0 8 zero")
	golden(t, "set --uid", c.ok("set", "vol", "--uid", "65534"), "vol: uid 65534, gid 6, mode 0600\n")
	golden(t, "set --gid --mode", c.ok("set", "vol", "--gid", "100", "--mode", "0640"), "vol: uid 65534, gid 100, mode 0640\n")
	if out := c.ok("info", "vol"); !strings.Contains(out, "Owner:             uid 65534, gid 100, mode 0640\n") {
		t.Errorf("info after set:\n%s", out)
	}
	c.fail("set vol: nothing to change", "set", "vol")
	c.fail("set vol: --mode", "set", "vol", "--mode", "9999")
	c.fail("no such device", "set", "nosuch", "--uid", "1")
	golden(t, "table after set", c.ok("table", "vol"), "0 8 zero \n")
}
