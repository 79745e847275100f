package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// waitMerged waits until the merge of snapshot name has finished: the
// snapshot is gone and the devices left are origin alone, resumed.
func (e *env) waitMerged(name, origin string) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := e.c.Snapshot(bg, name)
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == wire.CodeNotFound && slices.Equal(e.devNames(), []string{origin}) && !e.info(origin).Suspended {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("merge of %s not finished 60s after its users let go (snapshot: %v; devices %v)", name, err, e.devNames())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ensure that a merge never rewrites an origin under a file system that
// caches it: with ext4 mounted on a loop device over vol's FUSE file, the
// merge is refused and names the loop device, its mount and the way out;
// with --deferred it is recorded, and runs once the file system is
// unmounted and the loop device detached. ext4 is then clean and holds
// exactly what it held at the snapshot.
func TestSnapshot_mergeRefusedWhileMounted(t *testing.T) {
	testutil.RequireTool(t, "losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "fsfreeze")
	e := newFUSEEnv(t)
	const size = 64 * mib
	e.pmemVol("vol", size)
	file := filepath.Join(e.d.FUSEDir(), "vol")
	loop, mnt, before := e.ext4Snapshot(file, "s5")

	_, err := e.c.SnapshotMerge(bg, "s5", wire.SnapshotMerge{})
	wantCode(t, err, wire.CodeBusy, "vol is in use", "loop device "+loop.Dev, "mounted on "+mnt, "losetup -d "+loop.Dev, "--deferred")
	if got, err := os.ReadFile(filepath.Join(mnt, "c")); err != nil || string(got) != "written after the snapshot\n" {
		t.Fatalf("the file system after the refused merge: %q, %v", got, err)
	}
	if in := e.info("vol"); in.Suspended {
		t.Fatalf("vol suspended after the refused merge: %+v", in)
	}

	s, err := e.c.SnapshotMerge(bg, "s5", wire.SnapshotMerge{Deferred: true})
	if err != nil || !s.MergeDeferred || s.State != wire.SnapshotActive || s.Merge != nil {
		t.Fatalf("merge --deferred: %+v, %v; want it recorded, not started", s, err)
	}
	run(t, "sync")
	time.Sleep(100 * time.Millisecond) // a merge started now would be too early
	if s, err := e.c.Snapshot(bg, "s5"); err != nil || !s.MergeDeferred || s.Merge != nil {
		t.Fatalf("s5 while vol is mounted: %+v, %v", s, err)
	}

	run(t, "umount", mnt)
	detach(t, loop)
	e.waitMerged("s5", "vol")

	loop = losetup(t, file, false)
	run(t, "e2fsck", "-fn", loop.Dev)
	mnt = mountAt(t, loop.Dev, "-o", "ro")
	for name, want := range before {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after the merge: %v, as it was at the snapshot: %v", name, err, bytes.Equal(got, want))
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "c")); !os.IsNotExist(err) {
		t.Errorf("a file written after the snapshot survived its merge: %v", err)
	}
	run(t, "umount", mnt)
}

// Ensure that a deferred merge survives a daemon restart: the state file
// keeps it, and the next start, with nothing holding the origin, runs it.
// The user here is an NBD client, which the refusal names.
func TestSnapshot_mergeDeferredAcrossRestart(t *testing.T) {
	e := newEnv(t)
	e.pmemVol("vol", volSize)
	r := rand.New(rand.NewPCG(5, 5))
	img := randBytes(r, volSize)
	e.write("vol", 0, img)
	e.snap("vol", "s1")
	e.write("vol", 0, randBytes(r, volSize))
	c, err := nbdclient.Dial("unix", filepath.Join(e.cfg.StateDir, daemon.NBDSocketName), "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	_, err = e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
	wantCode(t, err, wire.CodeBusy, "vol is in use", fmt.Sprintf("NBD client uid %d (gid %d, pid %d)", os.Getuid(), os.Getgid(), os.Getpid()), "disconnect", "--deferred")
	s, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{Deferred: true, NoWait: true})
	if err != nil || !s.MergeDeferred || s.Merge != nil {
		t.Fatalf("merge --deferred: %+v, %v", s, err)
	}
	if l := e.snapList("vol"); len(l) != 1 || !l[0].MergeDeferred || !strings.Contains(l[0].Note, "--deferred") {
		t.Fatalf("snapshot list: %+v", l)
	}
	e.restart() // disconnects the client
	e.waitMerged("s1", "vol")
	e.wantData("vol", img)
}

// Ensure that a DAX mapping of the origin that is not given back (a raw
// Bytes mapping) refuses the merge of a DAX origin, that --deferred waits
// for it instead, and that the merge runs once the client unmaps.
func TestSnapshot_mergeDeferredForDAXMapping(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	e := newEnv(t)
	e.pmemVol("vol", volSize)
	r := rand.New(rand.NewPCG(6, 6))
	e.write("vol", 0, randBytes(r, volSize))
	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map vol 0 %d rw", mib)
	c.Do("fill 1") // Bytes(): a raw mapping, which a recall cannot take back
	img := e.read("vol", 0, volSize)
	e.snap("vol", "s1")

	_, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{})
	wantCode(t, err, wire.CodeBusy, fmt.Sprintf("pid %d", c.Cmd.Process.Pid), "not given back")
	s, err := e.c.SnapshotMerge(bg, "s1", wire.SnapshotMerge{Deferred: true})
	if err != nil || !s.MergeDeferred || s.Merge != nil {
		t.Fatalf("merge --deferred: %+v, %v", s, err)
	}
	c.Do("fill 2") // the mapping still works, and its stores are undone by the merge
	c.Do("unmap")
	e.waitMerged("s1", "vol")
	e.wantData("vol", img)
}
