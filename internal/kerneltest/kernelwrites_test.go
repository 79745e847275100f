package kerneltest

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/persistent"
)

// TestKernelWritesDaxsnapReads: the kernel's dm-snapshot fills a persistent
// COW device (origin writes through snapshot-origin, and a write to the
// snapshot itself); daxsnap's persistent store then loads it and must find
// exactly the exceptions the kernel made, the data the kernel copied, and
// the usage figures the kernel's status line printed.
func TestKernelWritesDaxsnapReads(t *testing.T) {
	k := Require(t)
	const (
		chunk       = exstore.Sector(8) // 4 KiB
		cb          = 4096
		originBytes = 8 << 20
		cowBytes    = 4 << 20
	)
	dir := t.TempDir()
	original := pattern(1, 0, originBytes)
	data := pattern(2, 0, originBytes) // what the guest writes, from /dev/vdc
	originPath := writeImage(t, dir, "origin.img", original, 0)
	cowPath := writeImage(t, dir, "cow.img", nil, cowBytes)
	dataPath := writeImage(t, dir, "data.img", data, 0)

	const orig, snap = "/dev/mapper/orig", "/dev/mapper/snap"
	writes := []write{
		{orig, 0, cb},                  // first chunk
		{orig, 1 * cb, cb},             // its neighbour
		{orig, 5 * cb, cb},             // chunk 5 ...
		{orig, 5 * cb, cb},             // ... twice: one exception only
		{orig, 100 * cb, cb},           //
		{orig, 300*cb + 1024, 512},     // one sector inside chunk 300: the whole chunk is copied
		{orig, 1024 * cb, 304 * cb},    // 304 chunks in 64 KiB writes: fills area 0, goes on in area 1
		{orig, originBytes - cb, cb},   // last chunk
		{snap, 42 * cb, cb},            // a whole-chunk write to the snapshot: the COW holds the new data
		{snap, 1500*cb + 2048, 1024},   // a partial snapshot write: old chunk copied, then patched
		{orig, 1500 * cb, cb},          // and then the origin changes under it: no new exception
		{orig, 2000*cb + 512, 3 * 512}, // sectors 1..3 of chunk 2000
		{orig, 2001*cb - 512, 2 * 512}, // straddles chunks 2000 and 2001
		{orig, 1024 * cb, 2 * cb},      // rewrite of already copied chunks: nothing new
	}
	// The host's models: the origin after the writes, the snapshot after
	// them, and which chunks must have exceptions.
	wantOrigin, wantSnap := bytes.Clone(original), bytes.Clone(original)
	var originChunks, snapChunks []exstore.Chunk
	var script strings.Builder
	fmt.Fprintf(&script, `set -e
N=%d
dmsetup create snap --table "0 $N snapshot /dev/vda /dev/vdb P %d"
dmsetup create orig --table "0 $N snapshot-origin /dev/vda"
`, originBytes/512, chunk)
	for _, w := range writes {
		script.WriteString(w.ddLine("/dev/vdc") + "\n")
		cs := chunksOf(w.Off, w.Len, cb)
		if w.Dev == orig {
			w.apply(wantOrigin, data)
			originChunks = append(originChunks, cs...)
		} else {
			w.apply(wantSnap, data)
			snapChunks = append(snapChunks, cs...)
		}
	}
	script.WriteString(`sync
echo "status: $(dmsetup status snap)"
echo "table: $(dmsetup table snap)"
echo "origin status: $(dmsetup status orig)"
echo "snap sha256: $(sha256sum </dev/mapper/snap | cut -d' ' -f1)"
echo "orig sha256: $(sha256sum </dev/mapper/orig | cut -d' ' -f1)"
dmsetup remove orig
dmsetup remove snap
echo "removed"
`)
	r := Boot(t, k, Options{Disks: []string{originPath, cowPath, dataPath}, Script: script.String()})
	t.Logf("guest output:\n%s", r.Output)
	if r.ExitCode != 0 || !strings.Contains(r.Output, "removed\n") {
		t.Fatalf("guest script failed (exit %d)", r.ExitCode)
	}

	// The guest's own view: the snapshot device read the expected snapshot
	// and the origin device the written origin.
	if got, want := field(t, r.Output, "snap sha256"), sha(wantSnap); got != want {
		t.Errorf("kernel's snapshot sha256 %s, want %s (the original origin with the snapshot writes)", got, want)
	}
	if got, want := field(t, r.Output, "orig sha256"), sha(wantOrigin); got != want {
		t.Errorf("kernel's origin sha256 %s, want %s", got, want)
	}
	if got := field(t, r.Output, "table"); !regexp.MustCompile(fmt.Sprintf(`^0 %d snapshot \d+:\d+ \d+:\d+ P 8$`, originBytes/512)).MatchString(got) {
		t.Errorf("snapshot table %q, want \"0 %d snapshot MAJ:MIN MAJ:MIN P 8\"", got, originBytes/512)
	}
	if got := readImage(t, originPath); !bytes.Equal(got, wantOrigin) {
		t.Fatalf("origin image after the guest's writes differs from the host's model: the guest did not write what the test thinks")
	}

	// daxsnap loads what the kernel wrote.
	s, cow, es := openStore(t, cowPath, chunk)
	if s.ChunkSize() != chunk {
		t.Errorf("chunk size %d, want %d", s.ChunkSize(), chunk)
	}
	wantChunks := chunkSet(originChunks, snapChunks)
	if got := sortedOlds(t, es); !slices.Equal(got, wantChunks) {
		t.Errorf("daxsnap loaded %d exceptions for origin chunks %s\nwant %d: %s", len(got), fmtChunks(got), len(wantChunks), fmtChunks(wantChunks))
	}
	if len(es) <= 256 {
		t.Errorf("only %d exceptions: the scenario must span more than one metadata area (256 per area)", len(es))
	}
	buf := make([]byte, cb)
	for _, e := range es {
		if _, err := cow.ReadAt(buf, int64(e.New)*cb); err != nil {
			t.Fatal(err)
		}
		want := original[int64(e.Old)*cb : int64(e.Old+1)*cb]
		what := "original origin chunk"
		if slices.Contains(snapChunks, e.Old) {
			want, what = wantSnap[int64(e.Old)*cb:int64(e.Old+1)*cb], "snapshot's written chunk"
		}
		if !bytes.Equal(buf, want) {
			t.Errorf("exception %v: COW chunk %d does not hold the %s %d", e, e.New, what, e.Old)
		}
	}
	if got := snapshotView(t, wantOrigin, cow, s.ChunkSize(), es); !bytes.Equal(got, wantSnap) {
		t.Errorf("the snapshot as daxsnap serves it (sha256 %s) differs from the kernel's (%s)", sha(got), sha(wantSnap))
	}

	// The usage daxsnap computes is the kernel's, figure for figure.
	kernelUsage := snapshotUsage(t, field(t, r.Output, "status"))
	if got := usageLine(s); got != kernelUsage {
		t.Errorf("daxsnap usage %q, kernel status %q", got, kernelUsage)
	}
	rep, err := persistent.Inspect(cow)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	if got := fmt.Sprintf("%d/%d %d", rep.Allocated, rep.Total, rep.Metadata); got != kernelUsage {
		t.Errorf("inspect usage %q, kernel status %q", got, kernelUsage)
	}
	if rep.HeaderTailDirty || len(rep.Notes) != 0 {
		t.Errorf("inspect finds a kernel-written store suspicious: header tail dirty %v, notes %q", rep.HeaderTailDirty, rep.Notes)
	}
	if len(rep.Areas) != 2 || !rep.Areas[0].Full || rep.Areas[1].Full {
		t.Errorf("areas %+v: want area 0 full and area 1 current", rep.Areas)
	}
}
