package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// fileVol creates device name over a new 4 MiB file.
func (c *cli) fileVol(name string) string {
	c.t.Helper()
	path := filepath.Join(c.t.TempDir(), name+".img")
	if err := os.WriteFile(path, make([]byte, 4<<20), 0o600); err != nil {
		c.t.Fatal(err)
	}
	c.ok("create", name, "--table", "0 8192 linear "+path+" 0")
	return path
}

// Ensure that the snapshot verbs print what they did, list snapshots as a
// table and as JSON, merge with a progress bar, and remove.
func TestCLI_snapshot(t *testing.T) {
	c := newCLI(t)
	c.fileVol("vol")
	cow := filepath.Join(c.d.StateDir(), "cow", "s1.cow")
	out := c.ok("snapshot", "create", "vol", "s1")
	golden(t, "snapshot create", out, "created snapshot s1 of vol: COW "+cow+", store P, chunk 4KiB\n"+
		"note: COW "+cow+": 4218880 bytes (10% of the origin, at least 8 MiB, at most a full copy of 4218880 bytes); give --cow-size to choose.\n")
	mine := filepath.Join(t.TempDir(), "mine.cow")
	os.WriteFile(mine, make([]byte, 1<<20), 0o600)
	c.ok("snapshot", "create", "vol", "s2", "--cow", mine, "--chunk", "16k")
	c.ok("snapshot", "create", "vol", "t1", "--transient", "--cow-size", "1M")

	fields := strings.Fields(c.ok("snapshot", "list"))
	golden(t, "snapshot list", strings.Join(fields, " "), "NAME ORIGIN STORE CHUNK USAGE STATE COW "+
		"s1 vol P 4KiB 0.19% active "+cow+" (daxsnap's) "+
		"s2 vol P 16KiB 3.12% active "+mine+" "+
		"t1 vol N 4KiB 0.00% active "+filepath.Join(c.d.StateDir(), "cow", "t1.cow")+" (daxsnap's)")
	var list []wire.Snapshot
	if err := json.Unmarshal([]byte(c.ok("snapshot", "list", "vol", "--json")), &list); err != nil || len(list) != 3 || list[1].COW != mine || list[1].ChunkSize != 16384 {
		t.Fatalf("snapshot list --json: %+v, %v", list, err)
	}
	golden(t, "table vol", c.ok("table", "vol"), "0 8192 snapshot-origin /dev/mapper/vol-real\n")

	code, out, errOut := runIn("", "--socket", c.socket, "snapshot", "merge", "s1")
	if code != 0 || !regexp.MustCompile(`^merged s1 into vol \(finished at [-0-9]+ [:0-9]+ \S+\)\n$`).MatchString(out) || errOut != "" {
		t.Fatalf("snapshot merge: exit %d, stdout %q, stderr %q (no progress bar: stderr is no terminal)", code, out, errOut)
	}
	out = c.ok("snapshot", "merge", "s2", "--no-wait")
	if !strings.HasPrefix(out, "merging s2 into vol: `daxsnap snapshot list vol` shows the progress") && !strings.HasPrefix(out, "merged s2 into vol (finished at ") {
		t.Fatalf("merge --no-wait: %q", out)
	}
	c.fail("t1 is a transient snapshot", "snapshot", "merge", "t1")
	waitFor(t, "the merge of s2 to finish", func() bool { return !strings.Contains(c.ok("snapshot", "ls"), "s2") })
	// Waiting on the merge once it has finished says so.
	if out := c.ok("snapshot", "merge", "s2"); !strings.HasPrefix(out, "merged s2 into vol (finished at ") {
		t.Fatalf("snapshot merge s2 after the merge ended: %q", out)
	}
	c.ok("snapshot", "rm", "t1")
	golden(t, "snapshot list (none)", c.ok("snapshot", "list"), "No snapshots: take one with `daxsnap snapshot create ORIGIN NAME`\n")
	golden(t, "ls", c.ok("ls"), "vol\t(254:0)\n")
	if _, err := os.Stat(mine); err != nil {
		t.Fatalf("the user's COW file went with its snapshot: %v", err)
	}

	c.fail("no origin device nope", "snapshot", "create", "nope", "x")
	c.fail("--cow-size: invalid size", "snapshot", "create", "vol", "x", "--cow-size", "lots")
	c.fail("not a power of two", "snapshot", "create", "vol", "x", "--chunk", "3k")
	c.fail("usage: daxsnap snapshot create ORIGIN NAME", "snapshot", "create", "vol")
	c.fail("no snapshot called x", "snapshot", "remove", "x")
}

// Ensure that cow inspect reads a COW file offline, as text and JSON, and
// that a file that is not a COW device fails with the report so far.
func TestCLI_cowInspect(t *testing.T) {
	c := newCLI(t)
	c.fileVol("vol")
	cow := filepath.Join(t.TempDir(), "s.cow")
	os.WriteFile(cow, make([]byte, 1<<20), 0o600)
	c.ok("snapshot", "create", "vol", "s", "--cow", cow)
	for _, off := range []int64{0, 4096, 3 * 4096} {
		if err := c.d.Service().WriteData(bg, "vol", off, []byte("new")); err != nil {
			t.Fatal(err)
		}
	}
	out := c.ok("cow", "inspect", cow)
	for _, want := range []string{
		"COW device:   " + cow + " (1048576 bytes",
		"header:       magic 0x70416e53, valid 1 (valid), version 1, chunk_size 8 sectors",
		"area 0:       chunk 1, 3 records (current)",
		"exceptions:   3",
		"  0: origin chunk 0 -> COW chunk 2",
		"  2: origin chunk 3 -> COW chunk 4",
		"usage:        40/2048 sectors allocated, 16 metadata sectors",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("cow inspect lacks %q:\n%s", want, out)
		}
	}
	var rep wire.COWReport
	if err := json.Unmarshal([]byte(c.ok("cow", "inspect", cow, "--json")), &rep); err != nil ||
		len(rep.Exceptions) != 3 || rep.Exceptions[1] != (wire.COWException{Old: 1, New: 3}) || rep.ChunkSize != 8 || rep.Valid != 1 {
		t.Fatalf("cow inspect --json: %+v, %v", rep, err)
	}

	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, append([]byte("junkjunk"), make([]byte, 8192)...), 0o600)
	code, out, errOut := runIn("", "cow", "inspect", junk)
	checkFailure(t, code, errOut, "is not 0x70416e53", []string{"cow", "inspect", junk})
	if !strings.Contains(out, "(not a snapshot header)") || strings.Contains(out, "(valid)") || strings.Contains(out, "0x70416e53") {
		t.Fatalf("cow inspect of junk: the report %q should show the header as not one, and leave the error to stderr", out)
	}
	if strings.Count(errOut, "inspect") != 1 {
		t.Fatalf("cow inspect of junk: the error names inspect more than once: %q", errOut)
	}

	summary := c.ok("cow", "inspect", "--summary", cow)
	if !strings.Contains(summary, "exceptions:   3\n") || strings.Contains(summary, "origin chunk") || !strings.Contains(summary, "usage:        40/2048") {
		t.Fatalf("cow inspect --summary: want the count and usage without a line per exception:\n%s", summary)
	}
	odd := filepath.Join(t.TempDir(), "odd")
	hdr := binary.LittleEndian.AppendUint32(nil, 0x70416e53)
	hdr = binary.LittleEndian.AppendUint32(hdr, 809138234)
	hdr = binary.LittleEndian.AppendUint32(hdr, 1)
	hdr = binary.LittleEndian.AppendUint32(hdr, 8)
	os.WriteFile(odd, append(hdr, make([]byte, 1<<16)...), 0o600)
	if _, out, _ := runIn("", "cow", "inspect", "--summary", odd); !strings.Contains(out, "valid 809138234 (neither 0 nor 1") {
		t.Fatalf("cow inspect of a header whose valid is 809138234: %q", out)
	}
	code, _, errOut = runIn("", "cow", "inspect", junk+".none")
	checkFailure(t, code, errOut, "no such file", []string{"cow", "inspect"})
}

// Ensure that `snapshot extend` takes +N and N, says what it did, and
// refuses a missing or bad size; and that `snapshot create` passes its
// autoextend policy on.
func TestCLI_snapshotExtend(t *testing.T) {
	c := newCLI(t)
	c.fileVol("vol")
	c.ok("snapshot", "create", "vol", "s1", "--cow-size", "1M", "--autoextend-threshold", "80", "--autoextend-percent", "50")
	cow := filepath.Join(c.d.StateDir(), "cow", "s1.cow")
	golden(t, "extend +N", c.ok("snapshot", "extend", "s1", "--size", "+1M"), "extended snapshot s1: COW "+cow+" is 2MiB, 0.39% used\n")
	golden(t, "extend N", c.ok("snapshot", "extend", "s1", "--size", "3M"), "extended snapshot s1: COW "+cow+" is 3MiB, 0.26% used\n")
	c.fail("--size is missing", "snapshot", "extend", "s1")
	c.fail("--size", "snapshot", "extend", "s1", "--size", "+lots")
	c.fail("never shrinks", "snapshot", "extend", "s1", "--size", "1M")
	var s wire.Snapshot
	if err := json.Unmarshal([]byte(c.ok("snapshot", "extend", "s1", "--size", "+1M", "--json")), &s); err != nil ||
		s.Total != 4<<20/512 || s.AutoextendThreshold != 80 || s.AutoextendPercent != 50 {
		t.Fatalf("extend --json: %+v, %v; want 4 MiB, autoextend 80/50", s, err)
	}
}

// Ensure that `cow adopt` brings a snapshot back from a COW that holds
// one (a relative path works), says what it did and what to mind, and
// refuses a COW with no snapshot in it.
func TestCLI_cowAdopt(t *testing.T) {
	c := newCLI(t)
	c.fileVol("vol")
	dir := t.TempDir()
	mine := filepath.Join(dir, "mine.cow")
	os.WriteFile(mine, make([]byte, 1<<20), 0o600)
	c.fail("no snapshot header", "cow", "adopt", mine, "vol", "s1")
	c.ok("snapshot", "create", "vol", "s1", "--cow", mine, "--chunk", "16k")
	c.ok("snapshot", "remove", "s1") // the user's COW stays, snapshot and all
	t.Chdir(dir)
	out := c.ok("cow", "adopt", "mine.cow", "vol", "s2")
	if !strings.HasPrefix(out, "adopted mine.cow as snapshot s2 of vol: COW "+mine+", chunk 16KiB, 0 exceptions\nnote: Adopted COW "+mine) ||
		!strings.Contains(out, "written since") {
		t.Fatalf("cow adopt: %q", out)
	}
	c.fail("used by the table of s2", "cow", "adopt", mine, "vol", "s3")
}

// Ensure that `snapshot merge` names the NBD client that holds the origin
// and refuses, that --deferred records the merge (snapshot list says so)
// and that it runs once the client disconnects.
func TestCLI_snapshotMergeDeferred(t *testing.T) {
	c := newCLI(t)
	c.fileVol("vol")
	c.ok("snapshot", "create", "vol", "s1")
	nc, err := nbdclient.Dial("unix", filepath.Join(c.d.StateDir(), daemon.NBDSocketName), "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c.fail(fmt.Sprintf("vol is in use: NBD client uid %d (gid %d, pid %d)", os.Getuid(), os.Getgid(), os.Getpid()), "snapshot", "merge", "s1")
	golden(t, "merge --deferred", c.ok("snapshot", "merge", "s1", "--deferred"),
		"merge of s1 into vol deferred: vol is in use; the merge starts when its last user closes, or at the next start of the daemon (`daxsnap snapshot list vol` shows it)\n")
	if list := c.ok("snapshot", "list"); !strings.Contains(list, "merge deferred") {
		t.Fatalf("snapshot list does not show the deferred merge:\n%s", list)
	}
	nc.Close()
	waitFor(t, "the merge of s1 after the client left", func() bool { return !strings.Contains(c.ok("snapshot", "ls"), "s1") })
}
