package session_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client"
	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
	"github.com/daxsnap/daxsnap/internal/target/linear"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/daxsnap/daxsnap/internal/target/striped"
	"github.com/daxsnap/daxsnap/internal/uffd"
	"github.com/daxsnap/daxsnap/internal/wire"
)

const (
	pageSize = 4096
	mib      = 1 << 20
	volSize  = mib
	sectors  = volSize / 512
)

func TestMain(m *testing.M) {
	if clienttest.IsChild() {
		os.Exit(clienttest.Main())
	}
	os.Exit(m.Run())
}

// rig is a device manager over tmpfs files, with a session server whose
// test hooks (session.Hooks) the test sets while it runs.
type rig struct {
	dir string
	m   *dm.Manager
	srv *session.Server

	sweep  atomic.Pointer[func(protected int, faults func() int64)]
	broken atomic.Bool
	// skipReprotect breaks the cut's second phase (Hooks.SkipReprotect).
	skipReprotect atomic.Bool
	unmap         atomic.Pointer[func()]
	hold          atomic.Pointer[func()]
	lift          atomic.Pointer[func()]
	round         atomic.Pointer[func(round int)]
}

// hooks are the server's Hooks: what the test set, when it did.
func (r *rig) hooks() session.Hooks {
	return session.Hooks{
		Sweep: func(protected int, faults func() int64) {
			if f := r.sweep.Load(); f != nil {
				(*f)(protected, faults)
			}
		},
		BrokenCut:     r.broken.Load,
		SkipReprotect: r.skipReprotect.Load,
		Hold: func() {
			if f := r.hold.Load(); f != nil {
				(*f)()
			}
		},
		Lift: func() {
			if f := r.lift.Load(); f != nil {
				(*f)()
			}
		},
		Round: func(round int) {
			if f := r.round.Load(); f != nil {
				(*f)(round)
			}
		},
		Unmap: func() {
			if f := r.unmap.Load(); f != nil {
				(*f)()
			}
		},
	}
}

// setSweepHook makes every sweep call f after each mapping it protected
// (nil: nothing).
func (r *rig) setSweepHook(f func(protected int)) {
	if f == nil {
		r.sweep.Store(nil)
		return
	}
	r.setSweepFaultsHook(func(protected int, _ func() int64) { f(protected) })
}

// setSweepFaultsHook is setSweepHook with a reader of the write faults
// counted so far on the mapping just protected.
func (r *rig) setSweepFaultsHook(f func(protected int, faults func() int64)) { r.sweep.Store(&f) }

// setUnmapHook makes a fault handler that saw its client unmap call f
// before it lets the mapping go (nil: nothing).
func (r *rig) setUnmapHook(f func()) {
	if f == nil {
		r.unmap.Store(nil)
		return
	}
	r.unmap.Store(&f)
}

func newRig(t *testing.T, files ...string) *rig {
	t.Helper()
	return newRigSized(t, 4*mib, files...)
}

// newRigSized is newRig with files of size bytes.
func newRigSized(t testing.TB, size int64, files ...string) *rig {
	t.Helper()
	return newRigWith(t, size, nil, files...)
}

// shmDir is the tmpfs the rigs put their memory files on: /dev/shm, or
// $DAXSNAP_SHM_DIR (bench/dax.sh's SHMDIR: a tmpfs mounted huge=always).
func shmDir() string {
	if d := os.Getenv("DAXSNAP_SHM_DIR"); d != "" {
		return d
	}
	return "/dev/shm"
}

// newRigWith is newRigSized with configure applied to the server's
// configuration (nil: none).
func newRigWith(t testing.TB, size int64, configure func(*session.Config), files ...string) *rig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: userfaultfd on another process's memory and /dev/shm files")
	}
	dir, err := os.MkdirTemp(shmDir(), "daxsnap-session-")
	if err != nil {
		t.Skipf("no tmpfs at %s: %v", shmDir(), err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, f := range files {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
	}
	reg := dm.NewRegistry()
	for _, typ := range []*dm.TargetType{linear.Type, striped.Type, snapshot.OriginType, snapshot.SnapshotType} {
		reg.Register(typ)
	}
	m := dm.NewManager(reg, dm.NewDevicePool(backing.Open))
	r := &rig{dir: dir, m: m}
	cfg := session.Config{Socket: filepath.Join(t.TempDir(), "dax.sock"), Lookup: m.Get, OnRemove: m.OnRemove, Hooks: r.hooks()}
	if configure != nil {
		configure(&cfg)
	}
	srv, err := session.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.SetCutter(srv.Cut)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	r.srv = srv
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
		// Snapshots first: their states are process-wide, keyed by file
		// identity, which tmpfs reuses for the next test's files.
		for _, snapshots := range []bool{true, false} {
			for _, d := range m.List() {
				if tbl, _ := d.Table(dm.Live); strings.Contains(tbl, " snapshot ") == snapshots {
					if err := m.Remove(d.Name(), dm.RemoveOptions{Force: true}); err != nil {
						t.Errorf("remove %s: %v", d.Name(), err)
					}
				}
			}
		}
	})
	return r
}

func (r *rig) path(f string) string { return filepath.Join(r.dir, f) }

func (r *rig) create(t *testing.T, name, table string) *dm.Device {
	t.Helper()
	d, err := r.m.Create(name, dm.CreateOptions{Table: table})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if g := d.WriteGranularity(0, d.Size()); g != 0 && !strings.Contains(table, " snapshot ") {
		t.Fatalf("new device %s already copies out for a snapshot (granularity %d): a state of an earlier test on a reused inode?", name, g)
	}
	return d
}

func readAll(t *testing.T, d *dm.Device) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatalf("read %s: %v", d.Name(), err)
	}
	return b
}

func word(b []byte, page int) uint64 { return binary.LittleEndian.Uint64(b[page*pageSize:]) }

// takeSnapshot takes a transient snapshot of the origin file with 4 KiB
// chunks: its activation makes the consistent cut of the origin's
// mappings (dm.ActivationCutter, Server.Cut).
func (r *rig) takeSnapshot(t *testing.T, name, cow string, origin *dm.Device) *dm.Device {
	t.Helper()
	return r.create(t, name, fmt.Sprintf("0 %d snapshot %s %s N 8\n", sectors, r.path("mem"), r.path(cow)))
}

// TestSnapshot_Idle: writes before the snapshot are in it, writes after it
// are not, and the origin has them.
func TestSnapshot_Idle(t *testing.T) {
	r := newRig(t, "mem", "cow")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	c.Do("fill 1")
	if p := r.srv.Audit(); len(p) != 0 {
		t.Errorf("audit: %+v", p)
	}
	before := readAll(t, vol)
	if word(before, 7) != 1<<32|7 {
		t.Fatalf("block read of page 7 = %#x after the client's fill, want %#x", word(before, 7), 1<<32|7)
	}
	snap := r.takeSnapshot(t, "snap", "cow", vol)
	// A second client maps the volume after the snapshot: its mapping
	// comes protected, and its stores copy the chunks first.
	c2 := clienttest.Start(t, r.srv.Socket())
	c2.Do("map vol 0 %d rw", volSize)
	c2.Do("fill 3")
	if got := readAll(t, snap); !bytes.Equal(got, before) {
		t.Errorf("snapshot differs from the memory at snapshot time after a store through a mapping made later (page 7: %#x, want %#x)", word(got, 7), word(before, 7))
	}
	// The copies un-protected the chunks in every mapping: the first
	// client's stores no longer fault.
	c.Do("fill 2")
	if got := readAll(t, snap); !bytes.Equal(got, before) {
		t.Errorf("snapshot changed after the first client's stores (page 7: %#x, want %#x)", word(got, 7), word(before, 7))
	}
	after := readAll(t, vol)
	for p := 0; p < volSize/pageSize; p++ {
		if w := word(after, p); w != 2<<32|uint64(p) {
			t.Fatalf("origin page %d = %#x after the last fill, want %#x", p, w, 2<<32|uint64(p))
		}
	}
	if st := r.srv.Stats(); st.Faults.Load() < volSize/pageSize || st.Prepared.Load() < volSize/pageSize {
		t.Errorf("faults %d, prepared %d: want at least one per page (%d)", st.Faults.Load(), st.Prepared.Load(), volSize/pageSize)
	}
	for _, in := range r.srv.Sessions() {
		if in.PID == c.Cmd.Process.Pid && (len(in.Mappings) != 1 || in.Mappings[0].Faults != 0) {
			t.Errorf("first client's session %+v: want one mapping that never faulted (the second client's copies un-protect it)", in)
		}
	}
	c2.Do("unmap")
	c.Do("unmap")
	c.Do("quit")
	c2.Do("quit")
}

// TestSnapshot_Streaming takes a snapshot while a client writes without
// pause, and checks the snapshot is a prefix of the client's writes: the
// writer stores seq+1 to page seq%P for seq = 0, 1, ...; the snapshot must
// hold, for some J, on each page p the last write to p with seq ≤ J.
func TestSnapshot_Streaming(t *testing.T) {
	r := newRig(t, "mem", "cow", "cow2")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	c.Do("stream")
	// The writer goes on before, between and after the snapshots, however
	// slowly it runs (sleeps promised nothing under load).
	goOn := func() { waitStreams(t, vol, volSize, []uint64{highestSeq(readAll(t, vol))}) }
	goOn()
	snap := r.takeSnapshot(t, "snap", "cow", vol)
	goOn()
	snap2 := r.takeSnapshot(t, "snap2", "cow2", vol)
	goOn()
	var last uint64
	fmt.Sscan(c.Do("stop"), &last)
	checkPrefix := func(name string, img []byte) uint64 { return checkPrefix(t, name, img) }
	j1 := checkPrefix("snapshot 1", readAll(t, snap))
	j2 := checkPrefix("snapshot 2", readAll(t, snap2))
	jo := checkPrefix("origin", readAll(t, vol))
	if !(j1 < j2 && j2 < jo && jo == last-1) {
		t.Errorf("cuts at writes %d, %d, origin at %d, writer's last %d: want increasing, origin at the last", j1, j2, jo, last-1)
	}
	t.Logf("%d writes; cuts at %d and %d; faults %d, held %d, sweeps %d", last, j1, j2,
		r.srv.Stats().Faults.Load(), r.srv.Stats().Held.Load(), r.srv.Stats().Sweeps.Load())
	c.Do("quit")
}

// TestMap_Striped: a striped volume over two files is one contiguous slice.
func TestMap_Striped(t *testing.T) {
	r := newRig(t, "a", "b")
	vol := r.create(t, "str", fmt.Sprintf("0 %d striped 2 8 %s 0 %s 0\n", sectors, r.path("a"), r.path("b")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map str 0 %d rw", volSize)
	if p := r.srv.Audit(); len(p) != 0 {
		t.Errorf("audit of a striped mapping (one VMA per piece): %+v", p)
	}
	c.Do("fill 5")
	img := readAll(t, vol)
	for p := 0; p < volSize/pageSize; p++ {
		if w := word(img, p); w != 5<<32|uint64(p) {
			t.Fatalf("block read of page %d = %#x, want %#x", p, w, 5<<32|uint64(p))
		}
	}
	c.Do("quit")
}

// TestMap_ReadOnly: a store to a read-only mapping kills the client.
func TestMap_ReadOnly(t *testing.T) {
	r := newRig(t, "mem")
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d ro", volSize)
	c.Send("segv 4096")
	if how := c.Exit(); how != "signal 11" {
		t.Fatalf("child storing to a read-only mapping ended with %s, want signal 11 (SIGSEGV)", how)
	}
}

// TestMap_NoFork: a forked child does not inherit the mapping.
func TestMap_NoFork(t *testing.T) {
	r := newRig(t, "mem")
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	if how := c.Do("fork 0"); how != "signal 11" {
		t.Fatalf("forked child touching the mapping ended with %q, want signal 11 (no such mapping: EFAULT, then SIGSEGV)", how)
	}
	c.Do("quit")
}

// TestMap_Refused: requests the daemon refuses, with their messages.
func TestMap_Refused(t *testing.T) {
	r := newRig(t, "mem", "file.img")
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	ctx := context.Background()
	c, err := client.Dial(ctx, r.srv.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cases := []struct {
		name   string
		device string
		o      client.MapOptions
		code   string
		msg    string
	}{
		{"require-sync", "vol", client.MapOptions{Length: volSize, RequireSync: true}, wire.CodeNotSupported,
			"device vol is not sync (MAP_SYNC) capable: its memory is a tmpfs file"},
		{"no-device", "nope", client.MapOptions{Length: volSize}, wire.CodeNotFound, "nope"},
		{"beyond-end", "vol", client.MapOptions{Offset: volSize, Length: pageSize}, wire.CodeOutOfRange, "vol has 1048576 bytes"},
		{"unaligned", "vol", client.MapOptions{Offset: 512, Length: pageSize}, wire.CodeInvalidArgument, "multiples of its memory's page size, 4096 bytes"},
		{"zero-length", "vol", client.MapOptions{}, wire.CodeInvalidArgument, "give a positive length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := c.Map(ctx, tc.device, tc.o)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Code != tc.code || !strings.Contains(ce.Message, tc.msg) {
				if m != nil {
					m.Close()
				}
				t.Fatalf("Map = %v; want a %s error mentioning %q", err, tc.code, tc.msg)
			}
		})
	}
	// The session still works after refusals: a read-only map (no store).
	m, err := c.Map(ctx, "vol", client.MapOptions{Length: volSize})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Bytes()) != volSize || m.Sync() || !strings.Contains(m.Durability(), "volatile") {
		t.Errorf("mapping: %d bytes, sync %v, durability %q", len(m.Bytes()), m.Sync(), m.Durability())
	}
	if infos := r.srv.Sessions(); len(infos) != 1 || len(infos[0].Mappings) != 1 || infos[0].PID != os.Getpid() {
		t.Errorf("sessions = %+v, want this process with one mapping", infos)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if infos := r.srv.Sessions(); len(infos) != 1 || len(infos[0].Mappings) != 0 {
		t.Errorf("sessions after unmap = %+v, want no mapping", infos)
	}
}

// TestClientKilledMidFault: a client killed while its store waits for the
// daemon leaves the daemon serving; the session is released.
func TestClientKilledMidFault(t *testing.T) {
	r := newRig(t, "mem", "cow")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	r.takeSnapshot(t, "snap", "cow", vol)
	// Suspended, the device holds the fault's copy-before-write.
	if err := vol.Suspend(dm.SuspendOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Send("poke 8192")
	deadline := time.Now().Add(time.Minute)
	for r.srv.Stats().Faults.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the store did not fault")
		}
		time.Sleep(time.Millisecond)
	}
	if ans, ok := c.Wait(50 * time.Millisecond); ok {
		t.Fatalf("the store completed (%q) while the device was suspended", ans)
	}
	c.Cmd.Process.Kill()
	c.Exit()
	if err := vol.Resume(); err != nil {
		t.Fatal(err)
	}
	for len(r.srv.Sessions()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the killed client's session is still there: %+v", r.srv.Sessions())
		}
		time.Sleep(time.Millisecond)
	}
	c2 := clienttest.Start(t, r.srv.Socket())
	c2.Do("map vol 0 %d rw", volSize)
	c2.Do("poke 8192")
	c2.Do("quit")
	if img := readAll(t, vol); img[8192] != 0xa5 {
		t.Errorf("origin byte 8192 = %#x after the new client's store, want 0xa5", img[8192])
	}
}

// TestProtect_HoldsFaultsDuringSweep: with two mappings, a store to the
// mapping the cut's sweep (its first phase) protected first completes at
// once, resolved and noted, not held; in the held phase (the second) a
// store through either mapping waits, until the cut ends, then completes.
func TestProtect_HoldsFaultsDuringSweep(t *testing.T) {
	r := newRig(t, "mem", "cow")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	a := clienttest.Start(t, r.srv.Socket())
	a.Do("map vol 0 %d rw", volSize)
	b := clienttest.Start(t, r.srv.Socket())
	b.Do("map vol 0 %d rw", volSize)
	paused, resume := make(chan struct{}), make(chan struct{})
	r.setSweepHook(func(protected int) {
		if protected == 1 {
			close(paused)
			<-resume
		}
	})
	defer r.setSweepHook(nil)
	held, release := make(chan struct{}), make(chan struct{})
	hold := func() {
		close(held)
		<-release
	}
	r.hold.Store(&hold)
	defer r.hold.Store(nil)
	errc := make(chan error, 1)
	go func() {
		_, err := r.m.Create("snap", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot %s %s N 8\n", sectors, r.path("mem"), r.path("cow"))})
		errc <- err
	}()
	<-paused
	// One of the two mappings is protected, the other not yet: a store
	// through each. Neither waits: the sweep resolves faults at once.
	st := r.srv.Stats()
	f0 := st.Faults.Load()
	a.Send("poke 4096")
	b.Send("poke 12288")
	for i := 0; i < 2; i++ {
		if _, ok := waitEither(a, b, 10*time.Second); !ok {
			close(resume)
			close(release)
			t.Fatalf("%d of 2 stores completed during the sweep, want both (faults then are resolved at once)", i)
		}
	}
	if n := st.Held.Load(); n != 0 {
		t.Errorf("%d faults held during the sweep, want 0", n)
	}
	if st.Faults.Load() == f0 {
		t.Errorf("no write fault during the sweep: one of the two mappings was protected, its store must have faulted")
	}
	close(resume)
	<-held
	// The held phase: the cut has not returned yet, every page is
	// protected again and faults wait. A store through each mapping (the
	// noted page of the protected one, and a page of the other).
	a.Send("poke 4096")
	b.Send("poke 12288")
	if ans, ok := waitEither(a, b, 200*time.Millisecond); ok {
		close(release)
		t.Fatalf("a store completed during the held phase (answered %q), want both held", ans)
	}
	// One blocked store is one held fault, however often the Go runtime's
	// preemption signal made it fault again.
	if n, repeats := st.Held.Load(), st.Repeats.Load(); n != 2 {
		t.Errorf("%d faults counted as held during the held phase (and %d repeats), want 2", n, repeats)
	} else {
		t.Logf("2 held faults, %d repeats; %d pages protected again", repeats, st.Reprotected.Load())
	}
	if n := st.Reprotected.Load(); n < 1 {
		t.Errorf("%d pages protected again in the held phase, want at least the one stored to during the sweep", n)
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, ok := waitEither(a, b, 10*time.Second); !ok {
			t.Fatal("the held stores did not complete after the cut")
		}
	}
	if st.HoldPhaseNanos.Load() <= 0 || st.HoldPhaseMaxNanos.Load() <= 0 || st.SweepMaxNanos.Load() < st.HoldPhaseMaxNanos.Load() {
		t.Errorf("held phase %d ns (longest %d), longest cut %d ns: want both counted, the cut at least its held phase",
			st.HoldPhaseNanos.Load(), st.HoldPhaseMaxNanos.Load(), st.SweepMaxNanos.Load())
	}
	if st.CutHoldMaxNanos.Load() < st.HoldPhaseMaxNanos.Load() {
		t.Errorf("longest hold to the cut's end %d ns, shorter than its held phase %d ns", st.CutHoldMaxNanos.Load(), st.HoldPhaseMaxNanos.Load())
	}
	img := readAll(t, vol)
	if img[4096] != 0xa5 || img[12288] != 0xa5 {
		t.Errorf("origin bytes 4096, 12288 = %#x, %#x after both stores, want 0xa5", img[4096], img[12288])
	}
}

// waitEither waits up to d for an answer from a or b.
func waitEither(a, b *clienttest.Child, d time.Duration) (string, bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, c := range []*clienttest.Child{a, b} {
			if ans, ok := c.Wait(time.Millisecond); ok {
				return ans, true
			}
		}
	}
	return "", false
}

// checkPrefix checks that img, the memory of one "stream" writer, is a
// prefix of its writes (seq+1 to page seq%P): for J the highest seq in
// it, every page holds the last write to it with seq ≤ J. It returns J.
func checkPrefix(t *testing.T, name string, img []byte) uint64 {
	t.Helper()
	pages := uint64(len(img) / pageSize)
	var j uint64
	for p := 0; p < int(pages); p++ {
		j = max(j, word(img, p))
	}
	if j == 0 {
		t.Fatalf("%s: no write at all", name)
	}
	j-- // the highest seq in the image
	for p := uint64(0); p < pages; p++ {
		want := uint64(0)
		if j >= p {
			want = j - (j-p)%pages + 1
		}
		if got := word(img, int(p)); got != want && !tornNext(got, want, j, p, pages) {
			t.Fatalf("%s is not a prefix of the writes: page %d holds write %d, want %d (cut at write %d)", name, p, got, want, j)
		}
	}
	return j
}

// tornNext reports whether got, found on page p where the cut at write j
// wants want, is write j+1 (value j+2) caught half done: its low bytes
// already stored over want's high bytes. The client's
// binary.LittleEndian.PutUint64 is a single 8-byte store only when the
// compiler combines its byte stores; under -race every byte store is
// instrumented separately and the word is written as 8 byte stores, low
// byte first (bench/uffdwp/wp_prefix reproduces this with -b). Only the
// page of write j+1 can hold such a mix, and the image is then still a
// prefix of the writer's (byte) stores.
func tornNext(got, want, j, p, pages uint64) bool {
	if (j+1)%pages != p {
		return false
	}
	next := j + 2
	for k := 1; k < 8; k++ {
		low := uint64(1)<<(8*k) - 1
		if got == next&low|want&^low {
			tornSeen.Add(1)
			return true
		}
	}
	return false
}

// tornSeen counts the torn words tornNext accepted (logged by the diagnostic
// and TestSnapshot_ManyWritersRepeated).
var tornSeen atomic.Int64

// TestSnapshot_ManyWritersRepeated: writers in three processes stream
// into their own quarter of a volume while snapshots are created,
// checked and removed again and again; each snapshot must hold a prefix
// of every writer's stores.
func TestSnapshot_ManyWritersRepeated(t *testing.T) {
	const rounds = 6
	torn0 := tornSeen.Load()
	files := []string{"mem"}
	for i := 0; i < rounds; i++ {
		files = append(files, fmt.Sprintf("cow%d", i))
	}
	r := newRig(t, files...)
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	const writers, part = 3, volSize / 4
	var cs []*clienttest.Child
	for i := 0; i < writers; i++ {
		c := clienttest.Start(t, r.srv.Socket())
		c.Do("map vol %d %d rw", i*part, part)
		c.Do("stream")
		cs = append(cs, c)
	}
	cuts := make([]uint64, writers)
	for k := 0; k < rounds; k++ {
		// Each snapshot cuts every stream past the previous cut (a fixed
		// sleep is no such promise under load: a writer may not have run).
		waitStreams(t, vol, part, cuts)
		name := fmt.Sprintf("snap%d", k)
		snap := r.takeSnapshot(t, name, fmt.Sprintf("cow%d", k), vol)
		// Let the streams go on past the cut before the snapshot is read.
		after, now := make([]uint64, writers), readAll(t, vol)
		for i := range after {
			after[i] = highestSeq(now[i*part : (i+1)*part])
		}
		waitStreams(t, vol, part, after)
		img := readAll(t, snap)
		for i := 0; i < writers; i++ {
			j := checkPrefix(t, fmt.Sprintf("%s, writer %d", name, i), img[i*part:(i+1)*part])
			if j < cuts[i] {
				t.Errorf("%s: writer %d cut at write %d, before the previous snapshot's %d", name, i, j, cuts[i])
			}
			cuts[i] = j
		}
		if k%2 == 1 { // keep every other snapshot, so several are active
			if err := r.m.Remove(name, dm.RemoveOptions{}); err != nil {
				t.Fatalf("remove %s: %v", name, err)
			}
		}
	}
	lasts := make([]uint64, writers)
	for i, c := range cs {
		fmt.Sscan(c.Do("stop"), &lasts[i])
	}
	img := readAll(t, vol)
	for i, c := range cs {
		if j := checkPrefix(t, fmt.Sprintf("origin, writer %d", i), img[i*part:(i+1)*part]); j != lasts[i]-1 {
			t.Errorf("origin holds writer %d's writes up to %d, want up to its last, %d", i, j, lasts[i]-1)
		}
		c.Do("quit")
	}
	st := r.srv.Stats()
	t.Logf("faults %d, held %d, prepared %d, sweeps %d (%v total), torn words accepted %d", st.Faults.Load(), st.Held.Load(), st.Prepared.Load(),
		st.Sweeps.Load(), time.Duration(st.SweepNanos.Load()), tornSeen.Load()-torn0)
}

// highestSeq is the highest seq of the "stream" writes in img, or 0 if it
// holds none.
func highestSeq(img []byte) uint64 {
	var j uint64
	for p := 0; p < len(img)/pageSize; p++ {
		j = max(j, word(img, p))
	}
	return max(j, 1) - 1
}

// waitStreams waits until every "stream" writer i, writing to its part of
// vol, has stored a write past seq after[i].
func waitStreams(t *testing.T, vol *dm.Device, part int, after []uint64) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		img, behind := readAll(t, vol), -1
		for i := range after {
			if highestSeq(img[i*part:(i+1)*part]) <= after[i] {
				behind = i
			}
		}
		if behind < 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("writer %d stored nothing past write %d in a minute", behind, after[behind])
		}
	}
}

// TestProtocol_Misbehaving: a client that does not follow the protocol is
// refused with a reason, and the daemon goes on serving it.
func TestProtocol_Misbehaving(t *testing.T) {
	r := newRig(t, "mem")
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: r.srv.Socket(), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, wire.MaxSessionPacket)
	ask := func(m wire.SessionMsg, fds ...int) wire.SessionMsg {
		t.Helper()
		if err := wire.SendSession(conn, m, fds...); err != nil {
			t.Fatal(err)
		}
		ans, got, err := wire.RecvSession(conn, buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range got {
			syscall.Close(fd)
		}
		return ans
	}
	wantError := func(ans wire.SessionMsg, msg string) {
		t.Helper()
		if ans.Op != wire.OpError || ans.Error == nil || !strings.Contains(ans.Error.Error, msg) {
			t.Fatalf("answer %+v (error %+v), want an error mentioning %q", ans, ans.Error, msg)
		}
	}
	mapReq := &wire.MapReq{Device: "vol", Length: volSize, Write: true}
	wantError(ask(wire.SessionMsg{Op: "bogus", ID: 1}), `unknown operation "bogus"`)
	wantError(ask(wire.SessionMsg{Op: wire.OpMap, ID: 1}), "without its map body")
	wantError(ask(wire.SessionMsg{Op: wire.OpArmed, ID: 9, Armed: &wire.MapArmed{Addr: 4096, Length: volSize}}), "was not granted")

	if ans := ask(wire.SessionMsg{Op: wire.OpMap, ID: 2, Map: mapReq}); ans.Op != wire.OpGrant || !ans.Grant.WriteProtect {
		t.Fatalf("map: %+v, want a write-protected grant", ans)
	}
	wantError(ask(wire.SessionMsg{Op: wire.OpMap, ID: 2, Map: mapReq}), "already in use")
	wantError(ask(wire.SessionMsg{Op: wire.OpArmed, ID: 2, Armed: &wire.MapArmed{Addr: 1 << 30, Length: volSize}}),
		"needs its userfaultfd attached")

	// A userfaultfd with nothing registered: refused at arm time.
	if ans := ask(wire.SessionMsg{Op: wire.OpMap, ID: 3, Map: mapReq}); ans.Op != wire.OpGrant {
		t.Fatalf("map: %+v", ans)
	}
	u, err := uffd.New(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.API(uffd.FeaturePagefaultFlagWP|uffd.FeatureWPHugetlbfsShmem, 0); err != nil {
		t.Fatal(err)
	}
	var ans wire.SessionMsg
	u.Control(func(fd int) {
		ans = ask(wire.SessionMsg{Op: wire.OpArmed, ID: 3, Armed: &wire.MapArmed{Addr: 1 << 30, Length: volSize, UFFD: true}}, fd)
	})
	u.Close()
	wantError(ans, "must have the whole range registered in write-protect mode")
	if infos := r.srv.Sessions(); len(infos) != 1 || len(infos[0].Mappings) != 0 {
		t.Errorf("sessions = %+v, want one session without mappings", infos)
	}
}

// TestSnapshot_CausalWriters: four client processes append causally
// ordered records (each record names the progress of every writer it saw,
// clienttest/causal.go) while snapshots are taken and removed; every
// snapshot must be prefix-closed. The sweep pauses between mappings to
// widen the window in which the cut matters. With the cut deliberately
// broken (faults during the cut resolved at once, un-protecting their
// pages), the checker must find a violation.
func TestSnapshot_CausalWriters(t *testing.T) {
	const writers, rounds = 4, 4
	files := []string{"mem"}
	for i := 0; i < rounds+1; i++ {
		files = append(files, fmt.Sprintf("cow%d", i))
	}
	r := newRig(t, files...)
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, r.path("mem")))
	cs := startCausal(t, r, writers)
	r.setSweepHook(func(protected int) {
		if protected == 1 {
			time.Sleep(20 * time.Millisecond)
		}
	})
	defer r.setSweepHook(nil)
	prev := make([]uint64, writers)
	for k := 0; k < rounds; k++ {
		time.Sleep(10 * time.Millisecond)
		name := fmt.Sprintf("snap%d", k)
		snap := r.takeSnapshot(t, name, fmt.Sprintf("cow%d", k), vol)
		last, err := clienttest.CheckCausal(readAll(t, snap), writers)
		if err != nil {
			t.Fatalf("%s is not prefix-closed: %v", name, err)
		}
		for w := range last {
			if last[w] < prev[w] {
				t.Errorf("%s: writer %d ends at record %d, before the previous snapshot's %d", name, w, last[w], prev[w])
			}
		}
		t.Logf("%s: writers end at records %v", name, last)
		prev = last
		if k%2 == 0 {
			if err := r.m.Remove(name, dm.RemoveOptions{}); err != nil {
				t.Fatalf("remove %s: %v", name, err)
			}
		}
	}

	// The broken cut: the checker must catch it. The sweep waits, after
	// protecting the first mapping, until that mapping's writer has
	// faulted on 8 pages (resolved at once, un-protecting its pages while
	// the snapshot is not active yet); then the writers go twice round
	// their rings, so that stores land on those pages after the
	// activation. The faults counted are that mapping's own: faults of
	// the mappings not yet protected (on pages an earlier snapshot still
	// protects) un-protect pages the sweep protects again, so they break
	// nothing, and under load they could make up all 8.
	r.broken.Store(true)
	// Without those faults the broken variant breaks nothing.
	r.setSweepFaultsHook(firstFaults(t, 8))
	broken := r.takeSnapshot(t, "broken", fmt.Sprintf("cow%d", rounds), vol)
	r.broken.Store(false)
	twoRings(t, vol, writers)
	_, err := clienttest.CheckCausal(readAll(t, broken), writers)
	if err == nil {
		t.Error("the checker passed a snapshot taken with the cut broken (faults not held during the cut)")
	} else {
		t.Logf("broken cut caught: %v", err)
	}

	lasts := make([]uint64, writers)
	for w, c := range cs {
		fmt.Sscan(c.Do("stop"), &lasts[w])
	}
	last, err := clienttest.CheckCausal(readAll(t, vol), writers)
	if err != nil {
		t.Fatalf("origin after the writers stopped: %v", err)
	}
	for w := range last {
		if last[w] != lasts[w] {
			t.Errorf("origin holds writer %d's records up to %d, want its last, %d", w, last[w], lasts[w])
		}
	}
	for _, c := range cs {
		c.Do("quit")
	}
}

// twoRings waits until each of the causal writers of vol has gone twice
// round its ring of records since the call (so that it has stored to
// every page of its ring since).
func twoRings(t *testing.T, vol *dm.Device, writers int) {
	t.Helper()
	ring := uint64((volSize/pageSize - 1) / writers * pageSize / 64) // records per writer's ring
	progress := func() []uint64 {
		img := readAll(t, vol)
		p := make([]uint64, writers)
		for w := range p {
			p[w] = binary.LittleEndian.Uint64(img[8*w:])
		}
		return p
	}
	p0 := progress()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		p, round := progress(), true
		for w := range p {
			round = round && p[w] >= p0[w]+2*ring
		}
		if round {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("writers at records %v, want each 2 rings (%d records) past %v", p, 2*ring, p0)
		}
	}
}

// startCausal starts writers clients, each mapping all of vol and
// appending causally ordered records (clienttest/causal.go).
func startCausal(t *testing.T, r *rig, writers int) []*clienttest.Child {
	t.Helper()
	var cs []*clienttest.Child
	for w := 0; w < writers; w++ {
		c := clienttest.Start(t, r.srv.Socket())
		c.Do("map vol 0 %d rw", volSize)
		cs = append(cs, c)
	}
	for w, c := range cs {
		c.Do("causal %d %d", w, writers)
	}
	return cs
}

// firstFaults is a sweep hook that waits, after the sweep protected its
// first mapping, until n of that mapping's writer's faults are resolved
// since its protection began (for up to a minute): then the noted ranges
// are there for the rounds. The faults taken between the pieces of the
// protection count: a fault un-protects a whole unit, so a writer that
// faulted there may not fault again in this sweep.
func firstFaults(t *testing.T, n int64) func(protected int, faults func() int64) {
	return func(protected int, faults func() int64) {
		if protected != 1 {
			return
		}
		for deadline := time.Now().Add(time.Minute); faults() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%d faults in a minute on the mapping the cut protected first, want %d", faults(), n)
				return
			}
		}
	}
}
