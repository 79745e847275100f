package daemon_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// enableCheckpoints checkpoints name to a new image in dir (interval
// ms; 0: an hour, so that only the test takes them) and returns its path.
func (e *env) enableCheckpoints(name, dir string, ms int64) string {
	e.t.Helper()
	if ms == 0 {
		ms = 3600_000
	}
	path := filepath.Join(dir, name+".img")
	du, err := e.c.CheckpointEnable(bg, name, wire.CheckpointEnable{Path: path, IntervalMS: ms})
	if err != nil {
		e.t.Fatalf("checkpoint enable %s: %v", name, err)
	}
	if du.State != wire.DurabilityCheckpointed || du.Path != path || du.Journal != path+".journal" {
		e.t.Fatalf("checkpoint enable %s = %+v", name, du)
	}
	return path
}

// checkpoint takes a checkpoint of name and returns it.
func (e *env) checkpoint(name string) wire.CheckpointInfo {
	e.t.Helper()
	du, err := e.c.CheckpointNow(bg, name)
	if err != nil {
		e.t.Fatalf("checkpoint %s: %v", name, err)
	}
	if du.Last == nil {
		e.t.Fatalf("checkpoint %s: no complete checkpoint reported: %+v", name, du)
	}
	return *du.Last
}

// filled reports whether every word of page p of img is seed<<32|p, as
// clienttest's fill writes it.
func filled(img []byte, seed uint64) bool {
	for off := 0; off < len(img); off += 8 {
		if binary.LittleEndian.Uint64(img[off:]) != seed<<32|uint64(off/4096) {
			return false
		}
	}
	return true
}

// imageContents opens an image offline, as a restore does (recovering
// it from its journal), and returns its newest complete checkpoint and
// contents.
func imageContents(t *testing.T, path string) (image.Checkpoint, []byte) {
	t.Helper()
	im, err := image.Open(path, image.Options{})
	if err != nil {
		t.Fatalf("open image %s: %v", path, err)
	}
	defer im.Close()
	b := make([]byte, im.Size())
	if _, err := im.ReadAt(b, 0); err != nil {
		t.Fatalf("read image %s: %v", path, err)
	}
	return im.Last(), b
}

// Ensure that a simulated reboot (the daemon stops, the region files are
// deleted, it starts again) brings a checkpointed volume back as of its
// last checkpoint, before anything can reach it, with a log line naming
// the checkpoint; that its checkpoints go on; and that a program mapping
// it goes on writing through Mapping.Access, which maps the restored
// memory.
func TestCheckpoint_rebootRestores(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	const size = 4 << 20
	e := newEnv(t)
	region := e.pmemVol("vol", size)
	img := e.enableCheckpoints("vol", t.TempDir(), 0)
	if in := e.info("vol"); in.Durability == nil || !strings.HasPrefix(in.Durability.Text, "checkpointed: no complete checkpoint yet (interval 60 min)") {
		t.Fatalf("info durability before the first checkpoint: %+v", in.Durability)
	}

	c := clienttest.Start(t, e.d.SessionSocketPath())
	c.Do("map vol 0 %d rw", size)
	c.Do("access-fill 1")
	if got := c.Do("persist"); !strings.Contains(got, "checkpointed to "+img) {
		t.Fatalf("persist answered %q, want the durability of a checkpointed volume", got)
	}
	last := e.checkpoint("vol")
	if in := e.info("vol"); !strings.Contains(in.Durability.Text, "checkpointed: last complete") || in.Durability.Last == nil || in.Durability.Last.Seq != last.Seq {
		t.Fatalf("info durability after checkpoint %d: %+v", last.Seq, in.Durability)
	}
	c.Do("access-fill 2") // after the last checkpoint: lost at the reboot

	e.stop()
	if err := os.Remove(region); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Dir(region)) // the region directory goes too at a reboot
	before := len(e.logs.String())
	e.start()

	got := e.read("vol", 0, size)
	if !filled(got, 1) {
		t.Fatalf("the restored volume is not as of checkpoint %d (fill 1): %d of %d pages differ", last.Seq, diffPages(got, fillImage(size, 1)), size/4096)
	}
	in := e.info("vol")
	if in.Note != "" || in.Durability == nil || in.Durability.Restored == nil || in.Durability.Restored.Seq != last.Seq {
		t.Fatalf("info after the restore: note %q, durability %+v; want no note and restored from checkpoint %d", in.Note, in.Durability, last.Seq)
	}
	logs := e.logs.String()[before:]
	if !strings.Contains(logs, "volume restored from checkpoint") || !strings.Contains(logs, fmt.Sprintf("seq=%d", last.Seq)) {
		t.Fatalf("no log line naming the restored checkpoint %d:\n%s", last.Seq, logs)
	}

	// The program's mapping is of the lost memory, so the new daemon
	// does not take it over, and its next Access says so (rather than
	// map the restored volume under it, silently dropping the stores
	// made since the checkpoint); mapped again, it writes on. The
	// client learns that when it reconnects, which the daemon's start
	// does not wait for: until then its stores go to the lost memory.
	deadline := time.Now().Add(time.Minute)
	for c.Do("recalled") != "true" {
		if time.Now().After(deadline) {
			t.Fatal("the mapping of the lost memory is still mapped a minute after the restart")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, _ := c.Try(time.Minute, "access-fill 3"); !strings.Contains(got, "did not take the mapping over") || !strings.Contains(got, "memory moved") {
		t.Fatalf("Access of the mapping of the lost memory: %q, want it refused as moved", got)
	}
	c.Do("map vol 0 %d rw", size)
	c.Do("access-fill 3")
	if got := e.read("vol", 0, size); !filled(got, 3) {
		t.Fatalf("the mapped writer's stores after the restore did not reach the volume: %d pages differ", diffPages(got, fillImage(size, 3)))
	}
	next := e.checkpoint("vol")
	if next.Seq <= last.Seq {
		t.Fatalf("checkpoint after the restore is %d, not after %d", next.Seq, last.Seq)
	}
	c.Do("unmap")
	c.Do("quit")
}

// fillImage is what clienttest's fill SEED writes over size bytes.
func fillImage(size int, seed uint64) []byte {
	b := make([]byte, size)
	for off := 0; off < size; off += 8 {
		binary.LittleEndian.PutUint64(b[off:], seed<<32|uint64(off/4096))
	}
	return b
}

// Ensure that kill -9 of the daemon at random moments while it
// checkpoints a volume that 4 processes write a causal log to leaves an
// image that restores (opened as a restore opens it) to a consistent
// cut, prefix-closed, and never older than the newest checkpoint the
// daemon reported complete before the kill; the restarted daemon
// resumes the checkpoints and the writers go on.
func TestCheckpoint_killDuringCheckpoints(t *testing.T) {
	testutil.RequireRoot(t)
	const (
		size    = 1 << 20
		writers = 4
	)
	kills := 6
	if testing.Short() {
		kills = 3
	}
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 2))
	t.Logf("seed %d", seed)
	dir := t.TempDir()
	g := memVolRig(t, dir, size)
	img := filepath.Join(dir, "vol.img")
	if _, err := g.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: img, IntervalMS: 15}); err != nil {
		t.Fatal(err)
	}
	sock := daemon.SessionSocketPathIn(g.state)
	var kids []*clienttest.Child
	for w := range writers {
		c := clienttest.Start(t, sock)
		c.Do("map vol 0 %d rw", size)
		c.Do("causal %d %d", w, writers)
		kids = append(kids, c)
	}
	var reported uint64 // the newest checkpoint reported complete
	var lastProgress []uint64
	for k := range kills {
		// Wait for a checkpoint newer than the last one reported, then
		// kill at a random moment of the ones that follow.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			du, err := g.c.CheckpointGet(bg, "vol")
			if err != nil {
				t.Fatal(err)
			}
			if du.Last != nil && du.Last.Seq > reported || du.Last != nil && reported == 0 {
				reported = du.Last.Seq
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: no checkpoint after %d within 2 minutes: %+v", k, reported, du)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(r.IntN(40)) * time.Millisecond)
		g.kill()

		last, b := imageContents(t, img)
		if last.Seq < reported {
			t.Fatalf("kill %d: the image restores checkpoint %d, older than %d, reported complete before the kill", k, last.Seq, reported)
		}
		p, err := clienttest.CheckCausal(b, writers)
		if err != nil {
			t.Fatalf("kill %d: the image's checkpoint %d is not a consistent cut: %v", k, last.Seq, err)
		}
		t.Logf("kill %d: image at checkpoint %d (reported %d), progress %v", k, last.Seq, reported, p)
		lastProgress = p
		reported = last.Seq
		g.start()
	}
	// The writers went on through the restarts, and checkpoints resume.
	waitProgress(t, func() []byte {
		b, err := g.c.ReadData(bg, "vol", 0, size)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, lastProgress)
	du, err := g.c.CheckpointNow(bg, "vol")
	if err != nil || du.Last == nil || du.Last.Seq <= reported {
		t.Fatalf("checkpoint after the last restart: %+v, %v; want one after %d", du, err, reported)
	}
	for _, c := range kids {
		c.Do("stop")
		c.Do("unmap")
		c.Do("quit")
	}
	g.term(t, "after the writers quit")
}

// Ensure that ext4 on a checkpointed volume, through the FUSE export and
// a loop device, survives a simulated reboot: files written, the file
// system frozen (fsfreeze) for a checkpoint, the daemon stopped, its
// regions deleted and the daemon started again, the restored volume
// passes e2fsck -fn and holds the files as they were at the checkpoint.
func TestCheckpoint_ext4Reboot(t *testing.T) {
	testutil.RequireTool(t, "losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "fsfreeze")
	e := newFUSEEnv(t)
	e2 := ext4Checkpointed(e, func(mnt string) {
		writeFile(t, filepath.Join(mnt, "c"), []byte("written after the checkpoint\n"))
	})
	region, file, files := e2.region, e2.file, e2.files

	e.stop()
	if err := os.Remove(region); err != nil {
		t.Fatal(err)
	}
	e.start()
	if in := e.info("vol"); in.Note != "" || in.Durability == nil || in.Durability.Restored == nil {
		t.Fatalf("info after the reboot: note %q, durability %+v", in.Note, in.Durability)
	}
	loop := losetup(t, file, true)
	e.waitOpenCount("vol", 1)
	run(t, "e2fsck", "-fn", loop.Dev)
	mnt := mountAt(t, loop.Dev, "-o", "ro")
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after the restore: %v, as written: %v", name, err, bytes.Equal(got, want))
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "c")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file written after the checkpoint is there after the restore: %v", err)
	}
	run(t, "umount", mnt)
	detach(t, loop)
	e.waitOpenCount("vol", 0)
}

// ext4Vol is a checkpointed 64 MiB volume "vol" with ext4 on it, made
// through the FUSE export and a loop device.
type ext4Vol struct {
	region, file string
	files        map[string][]byte // written before the checkpoint
	last         wire.CheckpointInfo
}

// ext4Checkpointed makes ext4 on a checkpointed volume, writes files,
// checkpoints it frozen (fsfreeze), runs after (if not nil) on the mount
// and lets go of it.
func ext4Checkpointed(e *env, after func(mnt string)) ext4Vol {
	t := e.t.(*testing.T)
	t.Helper()
	v := ext4Vol{region: e.pmemVol("vol", 64*mib), file: filepath.Join(e.d.FUSEDir(), "vol")}
	e.enableCheckpoints("vol", t.TempDir(), 0)
	loop := losetup(t, v.file, false)
	e.waitOpenCount("vol", 1)
	run(t, "mkfs.ext4", "-q", loop.Dev)
	mnt := mountAt(t, loop.Dev)
	v.files = map[string][]byte{"a": randomBytes(3 * mib), "dir/b": []byte("written before the checkpoint\n")}
	for name, data := range v.files {
		writeFile(t, filepath.Join(mnt, name), data)
	}
	run(t, "fsfreeze", "-f", mnt)
	v.last = e.checkpoint("vol")
	run(t, "fsfreeze", "-u", mnt)
	if after != nil {
		after(mnt)
	}
	run(t, "umount", mnt)
	detach(t, loop)
	e.waitOpenCount("vol", 0)
	return v
}

// Ensure that a damaged image or journal is refused with a clear error,
// at enable and at a restore, and that a restore from it leaves the
// volume serving errors, never half its data, with its configuration
// kept, so that the next start after a repair restores it.
func TestCheckpoint_badImage(t *testing.T) {
	testutil.RequireRoot(t)
	const size = 1 << 20
	e := newEnv(t)
	region := e.pmemVol("vol", size)
	dir := t.TempDir()

	// Enable over a journal that is not one.
	bad := filepath.Join(dir, "bad.img")
	if err := os.WriteFile(bad, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad+".journal", bytes.Repeat([]byte("garbage!"), 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: bad})
	wantCode(t, err, wire.CodeInvalidArgument, "damaged", bad, "remove both")
	if in := e.info("vol"); in.Durability == nil || in.Durability.State != wire.DurabilityVolatile {
		t.Fatalf("after a refused enable: durability %+v, want volatile", in.Durability)
	}

	// A good image, checkpointed, then damaged while the daemon is away
	// and the memory is gone.
	e.must("write", e.c.WriteData(bg, "vol", 0, fillImage(size, 7)))
	img := e.enableCheckpoints("vol", dir, 0)
	e.checkpoint("vol")
	e.stop()
	jnl := img + ".journal"
	good, err := os.ReadFile(jnl)
	if err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(good)
	for i := range 64 {
		damaged[i] ^= 0xff // both header slots start in the first bytes
		damaged[4096+i] ^= 0xff
	}
	if err := os.WriteFile(jnl, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(region)
	e.start()
	in := e.info("vol")
	if !strings.Contains(in.Note, "image was refused") || !strings.Contains(in.Note, "damaged") {
		t.Fatalf("note after a restore from a damaged journal: %q", in.Note)
	}
	if _, err := e.c.ReadData(bg, "vol", 0, 4096); err == nil {
		t.Fatal("a volume whose restore was refused serves data")
	}
	if _, err := e.c.CheckpointNow(bg, "vol"); err == nil {
		t.Fatal("a checkpoint of a volume that was not restored did not fail")
	}

	// Repaired, the next start restores it.
	e.stop()
	if err := os.WriteFile(jnl, good, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	if got := e.read("vol", 0, size); !filled(got, 7) {
		t.Fatalf("after the repair, the volume is not restored: %d pages differ", diffPages(got, fillImage(size, 7)))
	}
}

// Ensure that a checkpoint that cannot be written (the image's disk is
// full) fails the checkpoint, not the volume: writes go on, the previous
// checkpoint stays whole in the image, and checkpoints work again once
// there is room.
func TestCheckpoint_diskFull(t *testing.T) {
	testutil.RequireRoot(t) // mount
	const size = 1 << 20
	e := newEnv(t)
	e.pmemVol("vol", size)
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-t", "tmpfs", "-o", "size=8m", "none", dir)
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	e.must("write", e.c.WriteData(bg, "vol", 0, fillImage(size, 1)))
	img := e.enableCheckpoints("vol", dir, 0)
	first := e.checkpoint("vol")

	// The journal keeps the space its largest checkpoint took: give it
	// back, so that the next checkpoint needs new space, then take all
	// the space there is. Stop the checkpoints and open the image (which
	// applies a checkpoint not applied yet) first: then only the
	// journal's two header slots, its first 8 KiB, matter.
	e.must("disable", e.c.CheckpointDisable(bg, "vol"))
	if last, _ := imageContents(t, img); last.Seq != first.Seq {
		t.Fatalf("image after disable holds checkpoint %d, want %d", last.Seq, first.Seq)
	}
	jf, err := os.OpenFile(img+".journal", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := jf.Stat(); fi.Size() > 8192 {
		if err := unix.Fallocate(int(jf.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 8192, fi.Size()-8192); err != nil {
			t.Fatal(err)
		}
	}
	jf.Close()
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 64<<10)); err != nil {
			break // full
		}
	}
	f.Close()
	// Enabled again, its first checkpoint writes the whole volume anew.
	if _, err := e.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: img, IntervalMS: 3600_000}); err != nil {
		t.Fatal(err)
	}
	e.must("write", e.c.WriteData(bg, "vol", 0, fillImage(size, 2)))
	_, err = e.c.CheckpointNow(bg, "vol")
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "no space") {
		t.Fatalf("checkpoint on a full disk: %v, want a failure saying no space", err)
	}
	if got := e.read("vol", 0, size); !filled(got, 2) {
		t.Fatal("the volume changed when its checkpoint failed")
	}
	du, err := e.c.CheckpointGet(bg, "vol")
	if err != nil || du.Last == nil || du.Last.Seq != first.Seq || du.Error == "" || !strings.Contains(du.Text, "failed") {
		t.Fatalf("durability after the failed checkpoint: %+v, %v; want checkpoint %d still the last, and the failure said", du, err, first.Seq)
	}
	if m := e.metrics(); !strings.Contains(m, `daxsnap_checkpoint_errors_total{device="vol"} 1`) {
		t.Errorf("metrics lack the failed checkpoint:\n%s", grepLines(m, "checkpoint"))
	}
	e.must("disable", e.c.CheckpointDisable(bg, "vol"))
	last, b := imageContents(t, img)
	if last.Seq != first.Seq || !filled(b, 1) {
		t.Fatalf("the image after the failed checkpoint: checkpoint %d, contents of the first: %v; want checkpoint %d whole", last.Seq, filled(b, 1), first.Seq)
	}
	os.Remove(filler)
	if _, err := e.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: img, IntervalMS: 3600_000}); err != nil {
		t.Fatal(err)
	}
	if next := e.checkpoint("vol"); next.Seq <= first.Seq {
		t.Fatalf("checkpoint with room again: %d, want after %d", next.Seq, first.Seq)
	}
}

// ckChildEnv makes the test binary try the checkpoint verbs through the
// control API (as whatever uid runs it): "SOCKET NAME DIR".
const ckChildEnv = "DAXSNAP_TEST_CHECKPOINT_VERBS"

// ckChild tries enable, now and disable on NAME and prints, per verb, ""
// or the error's code and message, as JSON.
func ckChild(arg string) int {
	f := strings.Fields(arg)
	c := apiclient.New(f[0])
	name, dir := f[1], f[2]
	res := map[string]string{}
	note := func(verb string, err error) { res[verb] = childError(err) }
	_, err := c.CheckpointEnable(bg, name, wire.CheckpointEnable{Path: filepath.Join(dir, "nobody.img")})
	note("enable", err)
	_, err = c.CheckpointNow(bg, name)
	note("now", err)
	note("disable", c.CheckpointDisable(bg, name))
	_, err = c.CheckpointGet(bg, name)
	note("get", err)
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// Ensure that uid 65534 can neither enable, trigger nor disable the
// checkpoints of a device it does not own (changes need root or the
// daemon's uid), and may read their state, as the control API's rule is.
func TestCheckpoint_nobodyRefused(t *testing.T) {
	testutil.RequireRoot(t)
	e := newEnv(t)
	openToOthers(e.cfg.StateDir)
	os.Chmod(e.d.SocketPath(), 0o666)
	e.pmemVol("vol", 1<<20)
	dir := t.TempDir()
	img := e.enableCheckpoints("vol", dir, 0)
	e.pmemVol("plain", 1<<20)
	for _, name := range []string{"vol", "plain"} {
		var res map[string]string
		runAsNobody(t, ckChildEnv+"="+e.d.SocketPath()+" "+name+" "+dir, &res)
		for _, verb := range []string{"enable", "now", "disable"} {
			if got := res[verb]; !strings.HasPrefix(got, "permission_denied: ") || !strings.Contains(got, "uid 65534") {
				t.Errorf("uid 65534: checkpoint %s %s: %q, want permission_denied naming the uid", verb, name, got)
			}
		}
		if name == "vol" && res["get"] != "" {
			t.Errorf("uid 65534 reading the checkpoint state of vol: %q, want allowed", res["get"])
		}
	}
	if du, err := e.c.CheckpointGet(bg, "vol"); err != nil || du.State != wire.DurabilityCheckpointed || du.Path != img {
		t.Fatalf("vol after uid 65534's attempts: %+v, %v; want checkpointed to %s as before", du, err, img)
	}
	if in := e.info("plain"); in.Durability == nil || in.Durability.State != wire.DurabilityVolatile {
		t.Fatalf("plain after uid 65534's attempts: %+v; want volatile", in.Durability)
	}
	if _, err := os.Stat(filepath.Join(dir, "nobody.img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("uid 65534's enable made an image: %v", err)
	}
}
