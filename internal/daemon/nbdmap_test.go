package daemon_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// mapRun is one line of `nbdinfo --map`: length bytes at off with flags.
type mapRun struct {
	off, length int64
	flags       int
}

// parseMap reads `nbdinfo --map` output, merging adjacent runs of equal
// flags (servers may split where they like).
func parseMap(t *testing.T, out string) []mapRun {
	t.Helper()
	var runs []mapRun
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("nbdinfo --map line %q", line)
		}
		off, err1 := strconv.ParseInt(f[0], 10, 64)
		n, err2 := strconv.ParseInt(f[1], 10, 64)
		flags, err3 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("nbdinfo --map line %q", line)
		}
		if k := len(runs) - 1; k >= 0 && runs[k].flags == flags && runs[k].off+runs[k].length == off {
			runs[k].length += n
			continue
		}
		runs = append(runs, mapRun{off, n, flags})
	}
	return runs
}

// dirtyChunks lists the 4 KiB chunks a dirty-bitmap map marks dirty
// (flag 1), checking dirty runs are chunk-aligned.
func dirtyChunks(t *testing.T, runs []mapRun) []int {
	t.Helper()
	var out []int
	for _, r := range runs {
		if r.flags&1 == 0 {
			continue
		}
		if r.off%blk != 0 || r.length%blk != 0 {
			t.Fatalf("dirty run %+v is not at chunk granularity", r)
		}
		for off := r.off; off < r.off+r.length; off += blk {
			out = append(out, int(off/blk))
		}
	}
	return out
}

func nbdURI(sock, export string) string { return "nbd+unix:///" + export + "?socket=" + sock }

// contextsOf is the metadata contexts nbdinfo --json lists for uri.
func contextsOf(t *testing.T, out string) []string {
	t.Helper()
	var info struct {
		Exports []struct {
			Contexts []string `json:"contexts"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	return info.Exports[0].Contexts
}

// Ensure that real clients read daxsnap's dirty bitmaps: nbdinfo lists
// qemu:dirty-bitmap:SINCE for every older snapshot on a snapshot's
// export and one per snapshot on the origin's, and maps them (dirty = 1);
// qemu-img map with x-dirty-bitmap reads them as qemu's own.
func TestNBDMap_clients(t *testing.T) {
	testutil.RequireTool(t, "nbdinfo", "qemu-img")
	e := newEnv(t)
	e.fileVol("vol", 1*mib)
	sock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	e.snap("vol", "s1")
	e.write("vol", 8192, make([]byte, 5000)) // chunks 2, 3
	e.snap("vol", "s2")
	e.write("vol", 100*blk+10, []byte{1}) // chunk 100
	e.snap("vol", "s3")

	for export, want := range map[string][]string{
		"s1":  {"base:allocation"},
		"s2":  {"base:allocation", "qemu:dirty-bitmap:s1"},
		"s3":  {"base:allocation", "qemu:dirty-bitmap:s1", "qemu:dirty-bitmap:s2"},
		"vol": {"base:allocation", "qemu:dirty-bitmap:s1", "qemu:dirty-bitmap:s2", "qemu:dirty-bitmap:s3"},
	} {
		if got := contextsOf(t, run(t, "nbdinfo", "--json", nbdURI(sock, export))); !slices.Equal(got, want) {
			t.Errorf("contexts of %s = %q, want %q", export, got, want)
		}
	}
	for _, tc := range []struct {
		export, since, want string
	}{
		{"s2", "s1", "0 8192 0\n8192 8192 1\n16384 1032192 0"},
		{"s3", "s1", "0 8192 0\n8192 8192 1\n16384 393216 0\n409600 4096 1\n413696 634880 0"},
		{"s3", "s2", "0 409600 0\n409600 4096 1\n413696 634880 0"},
		{"vol", "s3", "0 1048576 0"},
		{"vol", "s2", "0 409600 0\n409600 4096 1\n413696 634880 0"},
	} {
		var got []string
		for _, r := range parseMap(t, run(t, "nbdinfo", "--map=qemu:dirty-bitmap:"+tc.since, nbdURI(sock, tc.export))) {
			got = append(got, fmt.Sprintf("%d %d %d", r.off, r.length, r.flags))
		}
		if strings.Join(got, "\n") != tc.want {
			t.Errorf("nbdinfo --map=qemu:dirty-bitmap:%s %s:\n%s\nwant:\n%s", tc.since, tc.export, strings.Join(got, "\n"), tc.want)
		}
	}
	// qemu-img reads the bitmap through x-dirty-bitmap, which reports
	// dirty ranges as "data": false (qemu's own convention).
	out := run(t, "qemu-img", "map", "--output=json", "--image-opts",
		"driver=nbd,server.type=unix,server.path="+sock+",export=s3,x-dirty-bitmap=qemu:dirty-bitmap:s1")
	var m []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var dirty []string
	for _, x := range m {
		if !x.Data {
			dirty = append(dirty, fmt.Sprintf("%d+%d", x.Start, x.Length))
		}
	}
	if got := strings.Join(dirty, " "); got != "8192+8192 409600+4096" {
		t.Errorf("qemu-img map x-dirty-bitmap=qemu:dirty-bitmap:s1 of s3: dirty %s, want 8192+8192 409600+4096\n%s", got, out)
	}
	// A bitmap the export does not offer is refused, never read as clean.
	if out, err := exec.Command("nbdinfo", "--map=qemu:dirty-bitmap:s3", nbdURI(sock, "s2")).CombinedOutput(); err == nil {
		t.Errorf("nbdinfo --map=qemu:dirty-bitmap:s3 of s2 (s3 is newer) succeeded:\n%s", out)
	}
}

// qemuPeer is the same volume as a qcow2 image with persistent bitmaps,
// written by qemu-io and served by qemu-nbd -B: qemu's own changed-block
// tracking, the reference daxsnap's must match.
type qemuPeer struct {
	t    *testing.T
	img  string
	cmds []string // qemu-io commands not run yet
}

// bitmap runs `qemu-img bitmap OP [-g CHUNK] IMAGE NAME`.
func (q *qemuPeer) bitmap(op, name string) {
	q.flush()
	args := []string{"bitmap", op}
	if op == "--add" {
		args = append(args, "-g", strconv.Itoa(blk))
	}
	run(q.t, "qemu-img", append(args, q.img, name)...)
}

func (q *qemuPeer) write(off, n int64, pattern int) {
	q.cmds = append(q.cmds, fmt.Sprintf("write -P %d %d %d", pattern, off, n))
}

func (q *qemuPeer) flush() {
	if len(q.cmds) == 0 {
		return
	}
	args := []string{"-f", "qcow2"}
	for _, c := range q.cmds {
		args = append(args, "-c", c)
	}
	run(q.t, "qemu-io", append(args, q.img)...)
	q.cmds = nil
}

// serve runs qemu-nbd -B for each bitmap on a socket of its own, until
// the test ends.
func (q *qemuPeer) serve(bitmaps []string) string {
	q.flush()
	sock := filepath.Join(shortDir(q.t), "q.sock")
	args := []string{"-r", "-t", "-f", "qcow2", "-k", sock}
	for _, b := range bitmaps {
		args = append(args, "-B", b)
	}
	cmd := exec.Command("qemu-nbd", append(args, q.img)...)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		q.t.Fatal(err)
	}
	q.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			q.t.Fatalf("qemu-nbd did not create %s:\n%s", sock, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return sock
}

// shortDir is a temporary directory with a path short enough for a unix
// socket.
func shortDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/tmp", "nbdmap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Ensure that for random write patterns with snapshots in between, every
// dirty bitmap daxsnap offers (from each snapshot to each newer one, and
// to the live origin) equals the ground truth at chunk granularity, and
// equals what qemu-nbd -B reports for the same writes on a qcow2 image
// whose bitmaps were added (and disabled) at the same points.
func TestNBDMap_property(t *testing.T) {
	testutil.RequireTool(t, "nbdinfo", "qemu-img", "qemu-io", "qemu-nbd")
	e := newEnv(t)
	for round := range 3 {
		bitmapRound(t, e, round, nil)
	}
}

// Ensure the same with stores through a DAX mapping of a memory volume
// among the writes (caught by userfaultfd write-protect, copied out
// before they land), as programs that map volumes make them.
func TestNBDMap_propertyDAX(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd on another process's memory
	testutil.RequireTool(t, "nbdinfo", "qemu-img", "qemu-io", "qemu-nbd")
	e := newEnv(t)
	for round := range 2 {
		vol := fmt.Sprintf("v%d", round)
		e.pmemVol(vol, 128*blk)
		c := clienttest.Start(t, e.d.SessionSocketPath())
		c.Do("map %s 0 %d rw", vol, 128*blk)
		bitmapRound(t, e, round, c)
		c.Do("unmap")
	}
}

// bitmapRound is one round of the property tests on volume v<round>
// (a new file volume, or with dax the memory volume dax maps whole, some
// of whose writes are then stores through the mapping).
func bitmapRound(t *testing.T, e *env, round int, dax *clienttest.Child) {
	const chunks, gens = 128, 4
	sock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	r := rand.New(rand.NewPCG(uint64(round), 99))
	vol := fmt.Sprintf("v%d", round)
	if dax == nil {
		e.fileVol(vol, chunks*blk)
	}
	q := &qemuPeer{t: t, img: filepath.Join(t.TempDir(), "q.qcow2")}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", q.img, strconv.Itoa(chunks*blk))
	snap := func(g int) string { return fmt.Sprintf("%s-s%d", vol, g) }
	var written [gens]map[int]bool // written[g]: chunks written after snapshot g, before g+1
	var bitmaps []string
	for g := range gens {
		e.snap(vol, snap(g))
		for i := range g {
			q.bitmap("--disable", fmt.Sprintf("b%d_%d", i, g))
		}
		for j := g + 1; j < gens; j++ {
			q.bitmap("--add", fmt.Sprintf("b%d_%d", g, j))
			bitmaps = append(bitmaps, fmt.Sprintf("b%d_%d", g, j))
		}
		q.bitmap("--add", fmt.Sprintf("b%d_live", g))
		bitmaps = append(bitmaps, fmt.Sprintf("b%d_live", g))
		written[g] = map[int]bool{}
		for range 1 + r.IntN(12) {
			c := r.IntN(chunks)
			off := int64(c*blk + r.IntN(blk))
			n := min(int64(1+r.IntN(6*blk)), chunks*blk-off)
			if dax != nil && r.IntN(2) == 0 {
				dax.Do("poke %d", off) // one store of 0xa5
				n = 1
				q.write(off, n, 0xa5)
			} else {
				e.write(vol, off, bytes.Repeat([]byte{byte(g + 1)}, int(n)))
				q.write(off, n, g+1)
			}
			for x := off / blk; x <= (off+n-1)/blk; x++ {
				written[g][int(x)] = true
			}
		}
	}
	qsock := q.serve(bitmaps)
	for i := range gens {
		for j := i + 1; j <= gens; j++ {
			export, qbitmap := vol, fmt.Sprintf("b%d_live", i)
			if j < gens {
				export, qbitmap = snap(j), fmt.Sprintf("b%d_%d", i, j)
			}
			ours := parseMap(t, run(t, "nbdinfo", "--map=qemu:dirty-bitmap:"+snap(i), nbdURI(sock, export)))
			theirs := parseMap(t, run(t, "nbdinfo", "--map=qemu:dirty-bitmap:"+qbitmap, "nbd+unix:///?socket="+qsock))
			var truth []int
			for g := i; g < j; g++ {
				for c := range written[g] {
					if !slices.Contains(truth, c) {
						truth = append(truth, c)
					}
				}
			}
			slices.Sort(truth)
			if got := dirtyChunks(t, ours); !slices.Equal(got, truth) {
				t.Fatalf("round %d: dirty bitmap %s on %s: chunks %v, ground truth %v", round, snap(i), export, got, truth)
			}
			if !slices.Equal(ours, theirs) {
				t.Fatalf("round %d: dirty bitmap %s on %s:\n%v\nqemu-nbd -B %s:\n%v", round, snap(i), export, ours, qbitmap, theirs)
			}
		}
	}
}

// Ensure that a client sees a dirty bitmap only if it may read both the
// export and the snapshot the bitmap counts from: uid 65534, owner of
// vol, neither lists nor maps the bitmap of root's snapshot, which root
// does.
func TestNBDMap_access(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "nbdinfo")
	e := newEnv(t)
	openToOthers(e.cfg.StateDir)
	path := e.region("r", 1*mib)
	e.createOwned("vol", "0 2048 linear "+path+" 0", nobody, nobody, "0600")
	e.snap("vol", "s1") // root's, 0600
	e.write("vol", 0, []byte{1})
	sock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	if got := contextsOf(t, mustTool(t, 0, "nbdinfo", "--json", nbdURI(sock, "vol"))); !slices.Contains(got, "qemu:dirty-bitmap:s1") {
		t.Fatalf("root: contexts of vol %q lack qemu:dirty-bitmap:s1", got)
	}
	if got := contextsOf(t, mustTool(t, nobody, "nbdinfo", "--json", nbdURI(sock, "vol"))); slices.Contains(got, "qemu:dirty-bitmap:s1") {
		t.Fatalf("uid 65534: contexts of vol %q include root's qemu:dirty-bitmap:s1", got)
	}
	if out, err := tool(nobody, "nbdinfo", "--map=qemu:dirty-bitmap:s1", nbdURI(sock, "vol")); err == nil {
		t.Fatalf("uid 65534 mapped root's bitmap:\n%s", out)
	}
	mustTool(t, nobody, "nbdinfo", "--map", nbdURI(sock, "vol")) // its own volume still maps
}

// incrementalScript is the README's "Incremental backup" walkthrough:
// copy only the extents the dirty bitmap marks, each through nbdkit's
// offset filter on both sides, onto the previous backup.
const incrementalScript = `set -euo pipefail
sock=$1 prev=$2 snap=$3 backup=$4
nbdinfo --map=qemu:dirty-bitmap:$prev "nbd+unix:///$snap?socket=$sock" |
while read -r off len flags _; do
	[ "$flags" = 1 ] || continue       # 1: dirty (changed since $prev)
	nbdcopy -- [ nbdkit --exit-with-parent --filter=offset nbd socket="$sock" export="$snap" offset=$off range=$len ] \
		[ nbdkit --exit-with-parent --filter=offset file "$backup" offset=$off range=$len ]
done
`

// Ensure that the README's incremental backup works: a full nbdcopy of
// the first snapshot, then for each newer one only its dirty extents
// copied onto the backup, reproduces every snapshot byte for byte.
func TestNBDMap_incrementalBackup(t *testing.T) {
	testutil.RequireTool(t, "nbdinfo", "nbdcopy", "nbdkit", "bash")
	e := newEnv(t)
	const size = 2 * mib
	e.fileVol("vol", size)
	sock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	r := rand.New(rand.NewPCG(5, 6))
	e.write("vol", 0, randBytes(r, size))
	backup := filepath.Join(t.TempDir(), "backup.img")
	e.snap("vol", "g0")
	run(t, "nbdcopy", nbdURI(sock, "g0"), backup)
	for g := 1; g <= 3; g++ {
		for range 1 + r.IntN(8) {
			off := int64(r.IntN(size - 1))
			e.write("vol", off, randBytes(r, int(min(int64(1+r.IntN(40000)), size-off))))
		}
		prev, snap := fmt.Sprintf("g%d", g-1), fmt.Sprintf("g%d", g)
		e.snap("vol", snap)
		run(t, "bash", "-c", incrementalScript, "incremental", sock, prev, snap, backup)
		got, err := os.ReadFile(backup)
		if err != nil {
			t.Fatal(err)
		}
		want := e.read(snap, 0, size)
		if i := testutil.FirstDiff(got, want); i >= 0 || len(got) != size {
			t.Fatalf("generation %d: the backup differs from %s at byte %d (size %d)", g, snap, i, len(got))
		}
	}
}

// Ensure that a snapshot's base:allocation shows real holes: what its
// origin had unwritten at the snapshot reads as a hole (zeroes), a chunk
// the snapshot keeps in its COW is data, and every range called a hole
// reads back as zeroes.
func TestNBDMap_snapshotHoles(t *testing.T) {
	testutil.RequireTool(t, "nbdinfo")
	e := newEnv(t)
	path := e.region("r", 4*mib)
	e.create("vol", linear(path, 8192))
	sock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	e.write("vol", 1*mib, bytes.Repeat([]byte{0x5a}, 65536))
	e.snap("vol", "s1")
	e.write("vol", 2*mib, bytes.Repeat([]byte{0xa5}, 100)) // s1 copies chunk 512 (a hole) out: data in its COW
	e.write("vol", 1*mib, []byte{1})                       // and chunk 256
	var got []string
	for _, r := range parseMap(t, run(t, "nbdinfo", "--map", nbdURI(sock, "s1"))) {
		got = append(got, fmt.Sprintf("%d %d %d", r.off, r.length, r.flags))
		if r.flags&1 != 0 && !bytes.Equal(e.read("s1", r.off, r.length), make([]byte, r.length)) {
			t.Errorf("s1 range %d+%d is a hole but does not read as zeroes", r.off, r.length)
		}
	}
	want := "0 1048576 3\n1048576 65536 0\n1114112 983040 3\n2097152 4096 0\n2101248 2093056 3"
	if strings.Join(got, "\n") != want {
		t.Fatalf("nbdinfo --map s1:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
}
