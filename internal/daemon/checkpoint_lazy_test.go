package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// slowDev delays large reads while slow is set: a restore's reads of
// the image, so that a test sees the restore under way.
type slowDev struct {
	image.Dev
	slow *atomic.Bool
}

func (d slowDev) ReadAt(p []byte, off int64) (int, error) {
	if d.slow.Load() && len(p) >= 256<<10 {
		time.Sleep(40 * time.Millisecond)
	}
	return d.Dev.ReadAt(p, off)
}

// Ensure that with --restore=lazy a volume whose memory is gone serves at
// once and restores on demand: a mapped load and a block read of parts not
// restored yet return the checkpoint's bytes; a store to such a part
// lands on the restored unit and survives the rest of the restore;
// `info` reports the progress; a snapshot, a table load and `checkpoint
// disable` are refused until it is complete; a daemon stopped in the
// middle continues it at its next start without undoing the stores made
// since; and once complete the record says so, the log names the
// checkpoint, and checkpoints go on.
func TestCheckpoint_lazyRestore(t *testing.T) {
	testutil.RequireRoot(t)
	const (
		size = 32 << 20
		page = 4096
	)
	var slow atomic.Bool
	imgDev := storetest.NewCrashDev("vol.img", size)
	jnlDev := storetest.NewCrashDev("vol.img.journal", 2*size+64<<10)
	var omu sync.Mutex
	made := false
	e := newEnvWith(t, func(cfg *daemon.Config) {
		cfg.CheckpointDevs = func(path, journal string) (image.Dev, image.Dev, bool, error) {
			omu.Lock()
			defer omu.Unlock()
			exists := made
			made = true
			return slowDev{imgDev, &slow}, jnlDev, exists, nil
		}
	})
	region := e.pmemVol("vol", size)
	e.enableCheckpoints("vol", t.TempDir(), 0)
	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map vol 0 %d rw", size)
	c.Do("fill 1")
	last := e.checkpoint("vol")
	c.Do("unmap")
	c.Do("quit")

	reboot := func() {
		e.stop()
		if err := os.Remove(region); err != nil {
			t.Fatal(err)
		}
		slow.Store(true)
		e.cfg.LazyRestore = true
		e.start()
	}
	want := fillImage(size, 1)
	restoring := func(what string) *wire.RestoreProgress {
		t.Helper()
		in := e.info("vol")
		if in.Durability == nil || in.Durability.Restoring == nil {
			t.Fatalf("%s: info says the volume is not restoring: %+v", what, in.Durability)
		}
		r := in.Durability.Restoring
		if r.Seq != last.Seq || r.Total != size || r.Done >= size || !strings.Contains(in.Durability.Text, fmt.Sprintf("restoring on demand from checkpoint %d", last.Seq)) {
			t.Fatalf("%s: restoring %+v, text %q; want from checkpoint %d, not done", what, r, in.Durability.Text, last.Seq)
		}
		return r
	}

	reboot()
	restoring("right after the start")
	// A mapped load of the last page, a block read of a page near the
	// middle: neither part can be restored yet but by demand.
	c = clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map vol 0 %d rw", size)
	lastPage := int64(size - page)
	if got := c.Do("peek %d", lastPage+8); got != fmt.Sprint(want[lastPage+8]) {
		t.Fatalf("mapped load of the last page returned %s, want %d", got, want[lastPage+8])
	}
	mid := int64(size/2 + 5*page)
	if got := e.read("vol", mid, page); !bytes.Equal(got, want[mid:mid+page]) {
		t.Fatal("a block read during the restore differs from the checkpoint")
	}
	c.Do("poke %d", lastPage+16) // a store to a restored unit
	want[lastPage+16] = 0xa5
	restoring("after the first touches")

	_, err := e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "s"})
	if err == nil || !strings.Contains(err.Error(), "still being restored") {
		t.Fatalf("snapshot create during the restore: %v, want it refused as restoring", err)
	}
	if err := e.c.CheckpointDisable(bg, "vol"); err == nil || !errors.Is(err, dm.ErrBusy) && !strings.Contains(err.Error(), "restor") {
		t.Fatalf("checkpoint disable during the restore: %v, want it refused", err)
	}

	// A stop in the middle: the next start continues into the holes.
	e.stop()
	e.start()
	restoring("after a restart in the middle")
	before := len(e.logs.String())
	if !strings.Contains(e.logs.String(), "continuing the restore on demand") {
		t.Fatal("the restart did not log that it continues the restore")
	}
	c.Do("poke %d", 8) // the first page: restored on demand now
	want[8] = 0xa5
	slow.Store(false)
	deadline := time.Now().Add(time.Minute)
	for {
		in := e.info("vol")
		if in.Durability != nil && in.Durability.Restoring == nil && in.Durability.Restored != nil {
			if in.Durability.Restored.Seq != last.Seq || in.Note != "" {
				t.Fatalf("restored: %+v, note %q; want checkpoint %d, no note", in.Durability.Restored, in.Note, last.Seq)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restore is not complete a minute later: %+v", in.Durability)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := e.read("vol", 0, size); !bytes.Equal(got, want) {
		t.Fatalf("the restored volume differs from checkpoint %d and the stores made since: %d pages differ", last.Seq, diffPages(got, want))
	}
	if got := c.Do("check 1"); got != "2" {
		t.Fatalf("the mapping sees %s pages differ from fill 1, want the 2 poked", got)
	}
	if logs := e.logs.String()[before:]; !strings.Contains(logs, "volume restored from checkpoint (on demand)") || !strings.Contains(logs, fmt.Sprintf("seq=%d", last.Seq)) {
		t.Fatalf("no log line naming the restored checkpoint %d:\n%s", last.Seq, logs)
	}
	next := e.checkpoint("vol")
	if next.Seq <= last.Seq {
		t.Fatalf("checkpoint after the restore is %d, not after %d", next.Seq, last.Seq)
	}
	e.snap("vol", "s") // no longer refused
	c.Do("unmap")
	c.Do("quit")

	// Complete and recorded: a restart takes the memory as intact.
	e.restart()
	if in := e.info("vol"); in.Durability == nil || in.Durability.Restoring != nil {
		t.Fatalf("after a restart the volume restores again: %+v", in.Durability)
	}
	_ = filepath.Base(region)
}
