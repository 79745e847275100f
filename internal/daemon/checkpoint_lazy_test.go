package daemon_test

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
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

// slowDev delays large reads (a restore's) while slow is set, so that a
// test sees the restore under way: each by delay, and one of the byte at
// hold (if not 0) until slow is cleared, so that the restore cannot be
// complete before the test says, however slow the machine.
type slowDev struct {
	image.Dev
	slow  *atomic.Bool
	delay time.Duration // 0: 40 ms
	hold  int64
}

func (d slowDev) ReadAt(p []byte, off int64) (int, error) {
	if len(p) >= 256<<10 {
		for d.hold != 0 && d.slow.Load() && off <= d.hold && d.hold < off+int64(len(p)) {
			time.Sleep(time.Millisecond)
		}
		if d.slow.Load() {
			time.Sleep(cmp.Or(d.delay, 40*time.Millisecond))
		}
	}
	return d.Dev.ReadAt(p, off)
}

// serveLazyEnv makes a serve child restore on demand, its image's large
// reads slowed: "DELAY" or "DELAY,HOLD" (a duration, and the MiB whose
// read waits for ever).
const serveLazyEnv = "DAXSNAP_TEST_SERVE_LAZY"

// slowImages opens an existing checkpoint image's files, its reads
// slowed by delay and hold as slowDev's (slow nil: always).
func slowImages(slow *atomic.Bool, delay time.Duration, hold int64) daemon.CheckpointDevs {
	if slow == nil {
		slow = &atomic.Bool{}
		slow.Store(true)
	}
	return func(path, journal string) (image.Dev, image.Dev, bool, error) {
		i, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, nil, false, err
		}
		j, err := os.OpenFile(journal, os.O_RDWR, 0)
		if err != nil {
			i.Close()
			return nil, nil, false, err
		}
		return slowDev{fileDev{i}, slow, delay, hold}, fileDev{j}, true, nil
	}
}

// Ensure that with --restore=lazy a volume whose memory is gone serves at
// once and restores on demand: a mapped load and a block read of parts not
// restored yet return the checkpoint's bytes; a store to such a part
// lands on the restored unit and survives the rest of the restore;
// `info` reports the progress; a snapshot, a table load and `checkpoint
// disable` are refused until it is complete; a daemon stopped in the
// middle continues it at its next start without undoing the stores made
// since; and once complete the record says so, the log names the
// checkpoint, and checkpoints go on. Also with the region on a tmpfs in
// huge pages, as docs/snapshot.md advises (the restore places small
// pages there).
func TestCheckpoint_lazyRestore(t *testing.T) {
	t.Run("shm", func(t *testing.T) { testLazyRestore(t, "") })
	t.Run("hugeTmpfs", func(t *testing.T) { testLazyRestore(t, "huge=always,size=96m") })
}

func testLazyRestore(t *testing.T, tmpfs string) {
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
		if tmpfs != "" {
			cfg.PmemDir = testutil.Tmpfs(t, tmpfs)
		}
		cfg.CheckpointDevs = func(path, journal string) (image.Dev, image.Dev, bool, error) {
			omu.Lock()
			defer omu.Unlock()
			exists := made
			made = true
			return slowDev{imgDev, &slow, time.Millisecond, 5 << 20}, jnlDev, exists, nil
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
	// A read-only map (no userfaultfd the daemon could catch its faults
	// with) gets its range restored before the client may load from it.
	ro := clienttest.Start(t, e.d.SessionSocketPath())
	ro.Do("map vol %d %d ro", 24<<20, 4<<20)
	if got, wantOff := ro.Do("peek %d", 4096+8), int64(24<<20+4096+8); got != fmt.Sprint(want[wantOff]) {
		t.Fatalf("read-only map: load at %d returned %s, want %d", wantOff, got, want[wantOff])
	}
	ro.Do("unmap")
	ro.Do("quit")
	c.Do("poke %d", lastPage+16) // a store to a restored unit
	want[lastPage+16] = 0xa5
	r := restoring("after the first touches")
	wantMetric(t, e.metrics(), `daxsnap_checkpoint_restore_remaining_bytes{device="vol"}`,
		func(v float64) bool { return v > 0 && v <= float64(size-r.Done) }, "the bytes not restored yet")

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
}

// fileDev is a file as an image.Dev, for a test that opens a daemon's
// image itself.
type fileDev struct{ *os.File }

func (f fileDev) Flush() error { return f.Sync() }
func (f fileDev) Size() int64 {
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// Ensure that ext4 on a volume restored on demand, through FUSE and a loop
// device, mounts and takes new files while the restore is under way, and
// that once complete the volume passes e2fsck -fn and holds the files
// checkpointed and the file written during the restore.
func TestCheckpoint_ext4LazyRestore(t *testing.T) {
	testutil.RequireTool(t, "losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "fsfreeze")
	e := newFUSEEnv(t)
	v := ext4Checkpointed(e, nil)
	region, file, files, last := v.region, v.file, v.files, v.last

	e.stop()
	if err := os.Remove(region); err != nil {
		t.Fatal(err)
	}
	var slow atomic.Bool
	slow.Store(true)
	e.cfg.LazyRestore = true
	e.cfg.CheckpointDevs = slowImages(&slow, 0, 0)
	e.start()
	if in := e.info("vol"); in.Durability == nil || in.Durability.Restoring == nil {
		t.Fatalf("info after the reboot: %+v; want restoring", in.Durability)
	}
	loop := losetup(t, file, false)
	e.waitOpenCount("vol", 1)
	mnt := mountAt(t, loop.Dev)
	for name, want := range files {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s during the restore: %v, as written: %v", name, err, bytes.Equal(got, want))
		}
	}
	files["c"] = randomBytes(2 * mib)
	writeFile(t, filepath.Join(mnt, "c"), files["c"])
	if in := e.info("vol"); in.Durability == nil || in.Durability.Restoring == nil {
		t.Logf("the restore was complete before the file system was done with: %+v", in.Durability)
	}
	run(t, "umount", mnt)
	detach(t, loop)
	e.waitOpenCount("vol", 0)
	slow.Store(false)
	deadline := time.Now().Add(time.Minute)
	for {
		in := e.info("vol")
		if in.Durability != nil && in.Durability.Restoring == nil {
			if in.Durability.Restored == nil || in.Durability.Restored.Seq != last.Seq || in.Note != "" {
				t.Fatalf("after the restore: %+v, note %q", in.Durability, in.Note)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the restore is not complete a minute later")
		}
		time.Sleep(10 * time.Millisecond)
	}
	loop = losetup(t, file, true)
	e.waitOpenCount("vol", 1)
	run(t, "e2fsck", "-fn", loop.Dev)
	mnt = mountAt(t, loop.Dev, "-o", "ro")
	for name, want := range files {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after the restore: %v, as written: %v", name, err, bytes.Equal(got, want))
		}
	}
	run(t, "umount", mnt)
	detach(t, loop)
	e.waitOpenCount("vol", 0)
}

// Ensure that kill -9 of the daemon at random moments of a restore on
// demand, with a program storing to the volume throughout (stores that
// restore their unit on demand, some of them in flight at the kill), in
// a loop, loses nothing: each start continues the restore, and once it
// is complete the volume is the checkpoint with every store made since.
func TestCheckpoint_killDuringLazyRestore(t *testing.T) {
	testutil.RequireRoot(t)
	const (
		size = 64 << 20
		page = 4096
	)
	kills := 4
	if testing.Short() {
		kills = 2
	}
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 3))
	t.Logf("seed %d", seed)
	dir := t.TempDir()
	g := serveRig(t, dir)
	g.start()
	p, err := g.c.PmemCreate(bg, wire.PmemCreate{Name: "vol-mem", Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.c.Create(bg, wire.DeviceCreate{Name: "vol", Table: linear(p.Path, size/512)}); err != nil {
		t.Fatal(err)
	}
	model := fillImage(size, 5)
	for off := 0; off < size; off += 8 << 20 {
		if err := g.c.WriteData(bg, "vol", int64(off), model[off:off+8<<20]); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "vol.img")
	if _, err := g.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: img, IntervalMS: 3600_000}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.c.CheckpointNow(bg, "vol"); err != nil {
		t.Fatal(err)
	}
	g.kill()
	if err := os.Remove(p.Path); err != nil {
		t.Fatal(err)
	}
	// Until the last start, the restore cannot complete (the read of
	// unit 7 waits for ever), whatever the machine's speed.
	g.env = []string{serveLazyEnv + "=5ms,7"}
	g.start()
	restoring := func(k int) {
		if in, err := g.c.Info(bg, "vol"); err != nil || in.Durability == nil || in.Durability.Restoring == nil {
			t.Fatalf("start %d: not restoring on demand: %+v, %v", k, in.Durability, err)
		}
	}
	restoring(0)
	c := clienttest.Start(t, daemon.SessionSocketPathIn(g.state))
	c.Do("map vol 0 %d rw", size)
	target := func() int64 {
		for {
			off := r.Int64N(size/page)*page + r.Int64N(page)
			if off>>20 != 7 {
				return off
			}
		}
	}
	poke := func(off int64) {
		c.Do("poke %d", off)
		model[off] = 0xa5
	}
	for k := range kills {
		for range 3 {
			poke(target())
		}
		// Stores in flight at the kill: they complete once the next
		// daemon has taken the mapping over.
		a, b := target(), target()
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.Do("poke %d", a)
			c.Do("poke %d", b)
		}()
		time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
		g.kill()
		if k == kills-1 {
			g.env = []string{serveLazyEnv + "=1ms"}
		}
		g.start()
		if k < kills-1 {
			restoring(k + 1)
		}
		<-done
		model[a], model[b] = 0xa5, 0xa5
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		in, err := g.c.Info(bg, "vol")
		if err != nil {
			t.Fatal(err)
		}
		if in.Durability != nil && in.Durability.Restoring == nil {
			if in.Durability.Restored == nil || in.Note != "" {
				t.Fatalf("after the restore: %+v, note %q", in.Durability, in.Note)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restore is not complete two minutes later: %+v", in.Durability)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var got []byte
	for off := int64(0); off < size; off += 32 << 20 {
		b, err := g.c.ReadData(bg, "vol", off, 32<<20)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, model) {
		t.Fatalf("after %d kills the volume differs from the checkpoint and the stores since: %d pages differ", kills, diffPages(got, model))
	}
	c.Do("unmap")
	c.Do("quit")
}
