package daemon_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that a merge never leaves a checkpoint image behind the volume.
// A merge writes the origin's memory below the device whose writes the
// checkpoints track, so the next checkpoint wrote nothing of it, and a
// restore after a reboot lost the merge. A merge into a checkpointed
// origin is refused, saying to disable the checkpoints first, and so is
// enabling checkpoints on an origin a merge writes or waits to write
// (deferred); merged with the
// checkpoints off and enabled again, the next checkpoint holds the
// merged volume, as a restore reads it.
func TestCheckpoint_mergeReachesImage(t *testing.T) {
	testutil.RequireRoot(t)
	const size = 4 << 20
	e := newEnv(t)
	e.pmemVol("vol", size)
	atSnap, after := bytes.Repeat([]byte{0x11}, size), bytes.Repeat([]byte{0x22}, size)
	e.write("vol", 0, atSnap)
	dir := t.TempDir()
	img := e.enableCheckpoints("vol", dir, 0)
	e.snap("vol", "s1")
	e.write("vol", 0, after)
	e.checkpoint("vol")

	_, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
	wantCode(t, err, wire.CodeBusy, "vol is checkpointed to "+img, "`daxsnap checkpoint disable vol` first")
	e.wantData("vol", after)
	if _, err := e.c.Snapshot(bg, "s1"); err != nil {
		t.Fatalf("s1 after the refused merge: %v", err)
	}

	e.must("checkpoint disable vol", e.c.CheckpointDisable(bg, "vol"))
	nbd, err := nbdclient.Dial("unix", filepath.Join(e.cfg.StateDir, daemon.NBDSocketName), "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer nbd.Close()
	if s, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{Deferred: true, NoWait: true}); err != nil || !s.MergeDeferred {
		t.Fatalf("merge --deferred of s1 while an NBD client holds vol: %+v, %v", s, err)
	}
	_, err = e.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: img, IntervalMS: 3600_000})
	wantCode(t, err, wire.CodeBusy, "the merge of snapshot s1 into vol waits for its users", "`daxsnap snapshot remove s1`")
	nbd.Close() // the deferred merge runs
	e.waitMerged("s1", "vol")
	e.wantData("vol", atSnap)

	e.enableCheckpoints("vol", dir, 0) // the same image again
	last := e.checkpoint("vol")
	cp, got := imageContents(t, img)
	if cp.Seq != last.Seq {
		t.Fatalf("image's last checkpoint is %d, want %d", cp.Seq, last.Seq)
	}
	if i := testutil.FirstDiff(got, atSnap); i >= 0 {
		t.Fatalf("checkpoint %d after the merge differs from the merged volume at byte %d: %#x, want %#x (a restore would lose the merge)", last.Seq, i, got[i], atSnap[i])
	}
}
