package daemon_test

import (
	"bytes"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

var (
	crashIterations = flag.Int("crash-iterations", 50, "TestSnapshot_crash: how many times to kill -9 the daemon")
	crashSeed       = flag.Uint64("crash-seed", 0, "TestSnapshot_crash: random seed (0: from the clock)")
)

// serveChildEnv makes the test binary run `daxsnap serve` on the state
// directory it names.
const serveChildEnv = "DAXSNAP_TEST_SERVE_STATE"

// servePmemEnv names the child's pmem directory (where the COWs of
// memory origins go too), a per-test one rather than /dev/shm.
const servePmemEnv = "DAXSNAP_TEST_SERVE_PMEM"

func serveChild(state string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := daemon.Config{StateDir: state, PmemDir: os.Getenv(servePmemEnv), Logger: log}
	if v := os.Getenv(serveLazyEnv); v != "" {
		d, mib, _ := strings.Cut(v, ",")
		delay, err := time.ParseDuration(d)
		hold, herr := strconv.ParseInt(cmp.Or(mib, "0"), 10, 64)
		if err = errors.Join(err, herr); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			return 1
		}
		cfg.LazyRestore, cfg.CheckpointDevs = true, slowImages(nil, delay, hold<<20)
	}
	if err := daemon.ServeUntilSignal(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

const (
	crashVol    = 4 << 20
	crashBlocks = crashVol / blk
	crashConns  = 3
)

// crashSnap is a snapshot and the origin's image when it was taken.
type crashSnap struct {
	name  string
	image []byte
}

// crashRig runs `daxsnap serve` as a child process and kills it.
type crashRig struct {
	t        *testing.T
	state    string
	pmem     string // the child's pmem directory, made at the first start
	cmd      *exec.Cmd
	waitExit chan error
	logs     *testutil.LogBuffer
	c        *apiclient.Client
	r        *rand.Rand

	mu      sync.Mutex
	blocks  [][]byte       // the last acknowledged write of each block
	pending map[int][]byte // writes sent but not acknowledged at the kill

	snaps     []crashSnap
	uncertain *crashSnap // an op the kill may have cut: create (not in snaps) or remove (in snaps)
	next      int

	writes, flushes, kills, cutOps int
	trouble                        []string // warnings and errors of earlier runs
	env                            []string // more environment for the child
}

// Ensure that after kill -9 at random moments while writers hammer the
// origin over NBD (random 4 KiB writes, a FLUSH every 8), and now and then
// in the middle of a snapshot create or remove, the restarted daemon
// shows: every persistent snapshot valid and equal to the origin's image
// when it was taken; every acknowledged write (so every write before the
// last completed FLUSH) on the origin, and a write in flight at the kill
// either there or not; a cut snapshot verb either done or undone, with no
// device or COW file left over.
func TestSnapshot_crash(t *testing.T) {
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-crash-seed to repeat), %d iterations (-crash-iterations)", seed, *crashIterations)
	dir := t.TempDir()
	g := &crashRig{t: t, state: filepath.Join(dir, "state"), r: rand.New(rand.NewPCG(seed, 1)), pending: map[int][]byte{}}
	t.Cleanup(func() {
		g.kill()
		if t.Failed() {
			t.Logf("seed %d; warnings and errors of earlier runs:\n%s\ndaemon logs (last run):\n%s", seed, strings.Join(g.trouble, "\n"), g.logs)
		}
	})
	g.start()
	img := filepath.Join(dir, "vol.img")
	if err := os.WriteFile(img, make([]byte, crashVol), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := g.c.Create(bg, wire.DeviceCreate{Name: "vol", Table: linear(img, crashVol/512)}); err != nil {
		t.Fatal(err)
	}
	initial := randBytes(g.r, crashVol)
	if err := g.c.WriteData(bg, "vol", 0, initial); err != nil {
		t.Fatal(err)
	}
	for b := range crashBlocks {
		g.blocks = append(g.blocks, initial[b*blk:(b+1)*blk])
	}
	for it := range *crashIterations {
		g.verify(it)
		if g.snapshotOp() {
			continue // killed in the middle of it
		}
		g.writeAndKill()
		g.start()
	}
	g.verify(*crashIterations)
	g.c.Close()
	g.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-g.waitExit; err != nil {
		t.Fatalf("clean stop after the crashes: %v", err)
	}
	g.cmd = nil
	t.Logf("%d kills (%d during a snapshot verb), %d acknowledged writes, %d flushes, %d snapshots at the end",
		g.kills, g.cutOps, g.writes, g.flushes, len(g.snaps))
}

func (g *crashRig) start() {
	g.t.Helper()
	if g.logs != nil {
		for _, line := range strings.Split(g.logs.String(), "\n") {
			if strings.Contains(line, "ERROR") || strings.Contains(line, "WARN") {
				g.trouble = append(g.trouble, line)
			}
		}
	}
	g.logs = &testutil.LogBuffer{}
	g.cmd = exec.Command(os.Args[0], "-test.run=^$")
	if g.pmem == "" {
		g.pmem = pmemDir(g.t)
	}
	g.cmd.Env = append(os.Environ(), serveChildEnv+"="+g.state, servePmemEnv+"="+g.pmem)
	g.cmd.Env = append(g.cmd.Env, g.env...)
	g.cmd.Stderr = g.logs
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- g.cmd.Wait() }()
	g.c = apiclient.New(daemon.SocketPathIn(g.state))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := g.c.Version(bg); err == nil {
			break
		}
		select {
		case err := <-exited:
			g.cmd = nil
			g.t.Fatalf("daemon exited at start: %v\n%s", err, g.logs)
		default:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("daemon did not come up:\n%s", g.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	g.waitExit = exited // the goroutine owns Wait
}

func (g *crashRig) kill() {
	if g.cmd == nil {
		return
	}
	g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.waitExit
	g.cmd = nil
	g.c.Close()
	g.kills++
}

// verify checks the restarted daemon against the model, then takes what
// it finds as the model's new state.
func (g *crashRig) verify(it int) {
	t := g.t
	t.Helper()
	got, err := g.c.ReadData(bg, "vol", 0, crashVol)
	if err != nil {
		t.Fatalf("iteration %d: read the origin: %v", it, err)
	}
	for b := range crashBlocks {
		blk := got[b*blk : (b+1)*blk]
		if !bytes.Equal(blk, g.blocks[b]) && !bytes.Equal(blk, g.pending[b]) {
			t.Fatalf("iteration %d: origin block %d holds neither its last acknowledged write nor the one in flight at the kill (in flight: %v)",
				it, b, g.pending[b] != nil)
		}
		g.blocks[b] = bytes.Clone(blk)
	}
	clear(g.pending)
	list, err := g.c.Snapshots(bg, "vol")
	if err != nil {
		t.Fatalf("iteration %d: snapshot list: %v", it, err)
	}
	listed := map[string]wire.Snapshot{}
	for _, s := range list {
		listed[s.Name] = s
	}
	if u := g.uncertain; u != nil {
		_, exists := listed[u.name]
		in := slices.ContainsFunc(g.snaps, func(s crashSnap) bool { return s.name == u.name })
		switch {
		case exists && !in:
			g.snaps = append(g.snaps, *u)
		case !exists && in:
			g.snaps = slices.DeleteFunc(g.snaps, func(s crashSnap) bool { return s.name == u.name })
		}
		g.uncertain = nil
	}
	if len(listed) != len(g.snaps) {
		t.Fatalf("iteration %d: snapshots %v, model has %d", it, list, len(g.snaps))
	}
	want := []string{"vol"}
	for _, s := range g.snaps {
		l, ok := listed[s.name]
		if !ok || l.State != wire.SnapshotActive {
			t.Fatalf("iteration %d: snapshot %s: %+v (listed %v), want it valid", it, s.name, l, ok)
		}
		data, err := g.c.ReadData(bg, s.name, 0, crashVol)
		if err != nil || !bytes.Equal(data, s.image) {
			t.Fatalf("iteration %d: snapshot %s differs from the origin when it was taken at byte %d (%v)", it, s.name, testutil.FirstDiff(data, s.image), err)
		}
		want = append(want, s.name)
	}
	if len(g.snaps) > 0 {
		want = append(want, "vol-real")
	}
	g.wantState(it, want)
}

// wantState checks that exactly the wanted devices and their COW files exist.
func (g *crashRig) wantState(it int, want []string) {
	devs, err := g.c.Devices(bg)
	if err != nil {
		g.t.Fatal(err)
	}
	var got []string
	for _, d := range devs {
		got = append(got, d.Name)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		g.t.Fatalf("iteration %d: devices %v, want %v", it, got, want)
	}
	entries, _ := os.ReadDir(filepath.Join(g.state, snapshots.COWSubdir))
	var cows, wantCows []string
	for _, e := range entries {
		cows = append(cows, e.Name())
	}
	for _, s := range g.snaps {
		wantCows = append(wantCows, s.name+".cow")
	}
	slices.Sort(wantCows)
	if !slices.Equal(cows, wantCows) {
		g.t.Fatalf("iteration %d: COW files %v, want %v", it, cows, wantCows)
	}
}

func (g *crashRig) image() []byte {
	return bytes.Join(g.blocks, nil)
}

// snapshotOp may create or remove a snapshot, with writers stopped, and
// sometimes kills the daemon in the middle of it (then reports true).
func (g *crashRig) snapshotOp() bool {
	var op func() error
	switch {
	case len(g.snaps) < 3 && g.r.IntN(3) == 0:
		g.next++
		s := crashSnap{name: fmt.Sprintf("s%d", g.next), image: g.image()}
		chunk := []int64{4096, 8192, 65536}[g.r.IntN(3)]
		g.uncertain = &s
		// Twice the origin: a COW sized for exactly a full copy can fill
		// up after crashes, whose uncommitted chunks stay allocated (holes,
		// as in the kernel), and a full COW invalidates the snapshot.
		op = func() error {
			_, err := g.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: s.name, ChunkSize: chunk, COWSize: 2 * crashVol})
			return err
		}
	case len(g.snaps) > 0 && g.r.IntN(4) == 0:
		s := g.snaps[g.r.IntN(len(g.snaps))]
		g.uncertain = &s
		op = func() error { return g.c.SnapshotRemove(bg, s.name) }
	default:
		return false
	}
	if g.r.IntN(3) > 0 {
		if err := op(); err != nil {
			g.t.Fatalf("snapshot %s: %v", g.uncertain.name, err)
		}
		g.verify(-1) // settles the model: the op is done
		return false
	}
	done := make(chan struct{})
	go func() { defer close(done); op() }()
	time.Sleep(time.Duration(g.r.IntN(15000)) * time.Microsecond)
	g.kill()
	<-done
	g.cutOps++
	g.start()
	return true
}

// writeAndKill runs writers over NBD and kills the daemon under them.
func (g *crashRig) writeAndKill() {
	sock := filepath.Join(g.state, daemon.NBDSocketName)
	var wg sync.WaitGroup
	for w := range crashConns {
		conn, err := nbdclient.Dial("unix", sock, "vol")
		if err != nil {
			g.t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(g.r.Uint64(), uint64(w)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			for n := 1; ; n++ {
				b := r.IntN(crashBlocks/crashConns)*crashConns + w
				p := randBytes(r, blk)
				g.mu.Lock()
				g.pending[b] = p
				g.mu.Unlock()
				if conn.WriteAt(p, int64(b)*blk) != nil {
					return
				}
				g.mu.Lock()
				g.blocks[b] = p
				delete(g.pending, b)
				g.writes++
				g.mu.Unlock()
				if n%8 == 0 {
					if conn.Flush() != nil {
						return
					}
					g.mu.Lock()
					g.flushes++
					g.mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(time.Duration(g.r.IntN(120000)) * time.Microsecond)
	g.kill()
	wg.Wait()
}
