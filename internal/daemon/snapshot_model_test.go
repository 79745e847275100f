package daemon_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/daemon/daemontest"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
	"pgregory.net/rapid"
)

// modelSize is the origin in the property test: 32 chunks of 4 KiB.
const modelSize = 128 << 10

// snapModel is what a snapshot must read as.
type snapModel struct {
	data      []byte
	transient bool
	lost      bool // transient, and the daemon restarted since
}

// snapMachine drives a real daemon through the snapshot verbs and block
// I/O, against a model of plain byte slices (as dmtest's pattern stomper
// does): an origin and up to 4 snapshots.
type snapMachine struct {
	cfg    daemon.Config
	d      *daemon.Daemon
	c      *apiclient.Client
	dax    bool
	caps   wire.Info
	origin []byte
	snaps  map[string]*snapModel
	next   int
}

// Ensure that whatever sequence of snapshot creations and removals,
// writes to the origin and to the snapshots, merges and daemon restarts
// happens, the origin and every snapshot read exactly as the model says,
// snapshot list agrees, a DAX origin keeps its capabilities, and a
// transient snapshot is `error` after a restart.
func TestSnapshot_model(t *testing.T) {
	shm := pmemDir(t)
	rapid.Check(t, func(rt *rapid.T) {
		m := &snapMachine{snaps: map[string]*snapModel{}, dax: rapid.Bool().Draw(rt, "dax")}
		state, err := os.MkdirTemp(t.TempDir(), "state")
		if err != nil {
			rt.Fatal(err)
		}
		mem, err := os.MkdirTemp(shm, "mem")
		if err != nil {
			rt.Fatal(err)
		}
		m.cfg = daemon.Config{StateDir: state, PmemDir: mem, NoNBDUnix: true}
		m.start(rt)
		rt.Cleanup(func() { m.stop(rt); os.RemoveAll(state); os.RemoveAll(mem) })
		m.setup(rt, state)
		rt.Repeat(map[string]func(*rapid.T){
			"":            m.check,
			"create":      m.create,
			"writeOrigin": m.writeOrigin,
			"writeSnap":   m.writeSnap,
			"remove":      m.remove,
			"merge":       m.merge,
			"restart":     m.restart,
		})
	})
}

func (m *snapMachine) start(rt *rapid.T) {
	m.d, m.c = daemontest.Start(rt, m.cfg)
}

func (m *snapMachine) stop(rt *rapid.T) {
	if m.d == nil {
		return
	}
	if err := daemontest.Stop(m.d, m.c); err != nil {
		rt.Error(err)
	}
	m.d = nil
}

func (m *snapMachine) setup(rt *rapid.T, dir string) {
	var path string
	if m.dax {
		p, err := m.c.PmemCreate(bg, wire.PmemCreate{Name: "mem", Size: modelSize})
		if err != nil {
			rt.Fatal(err)
		}
		path = p.Path
	} else {
		path = filepath.Join(dir, "vol.img")
		if err := os.WriteFile(path, make([]byte, modelSize), 0o600); err != nil {
			rt.Fatal(err)
		}
	}
	if _, err := m.c.Create(bg, wire.DeviceCreate{Name: "vol", Table: linear(path, modelSize/512)}); err != nil {
		rt.Fatal(err)
	}
	m.origin = drawBytes(rt, "initial", modelSize)
	m.mustWrite(rt, "vol", 0, m.origin)
	m.caps, _ = m.c.Info(bg, "vol")
}

func (m *snapMachine) mustWrite(rt *rapid.T, dev string, off int64, p []byte) {
	if err := m.c.WriteData(bg, dev, off, p); err != nil {
		rt.Fatalf("write %d bytes at %d to %s: %v", len(p), off, dev, err)
	}
}

// usable lists the snapshots that still hold data, sorted.
func (m *snapMachine) names(pred func(*snapModel) bool) []string {
	var out []string
	for n, s := range m.snaps {
		if pred(s) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func all(*snapModel) bool         { return true }
func readable(s *snapModel) bool  { return !s.lost }
func mergeable(s *snapModel) bool { return !s.transient }

func (m *snapMachine) create(rt *rapid.T) {
	if len(m.snaps) >= 4 {
		rt.Skip("4 snapshots already")
	}
	m.next++
	name := fmt.Sprintf("s%d", m.next)
	req := wire.SnapshotCreate{Origin: "vol", Name: name,
		ChunkSize: rapid.SampledFrom([]int64{4096, 8192, 16384}).Draw(rt, "chunk"),
		Transient: rapid.IntRange(0, 4).Draw(rt, "transient") == 0}
	if _, err := m.c.SnapshotCreate(bg, req); err != nil {
		rt.Fatalf("snapshot create %s: %v", name, err)
	}
	m.snaps[name] = &snapModel{data: bytes.Clone(m.origin), transient: req.Transient}
}

// drawWrite draws a write: anywhere, any length up to 3 chunks, often
// chunk-aligned.
func drawWrite(rt *rapid.T) (int64, []byte) {
	n := rapid.IntRange(1, 3*4096).Draw(rt, "len")
	if rapid.Bool().Draw(rt, "aligned") {
		n = 4096 * rapid.IntRange(1, 3).Draw(rt, "chunks")
	}
	off := int64(rapid.IntRange(0, modelSize-n).Draw(rt, "off"))
	if n%4096 == 0 {
		off &^= 4095
	}
	return off, drawBytes(rt, "data", n)
}

// drawBytes draws n bytes from a drawn seed (drawing each byte would
// make rapid's bookkeeping the test's main cost).
func drawBytes(rt *rapid.T, label string, n int) []byte {
	seed := rapid.Uint64().Draw(rt, label+" seed")
	return randBytes(rand.New(rand.NewPCG(seed, uint64(n))), n)
}

func (m *snapMachine) writeOrigin(rt *rapid.T) {
	off, p := drawWrite(rt)
	m.mustWrite(rt, "vol", off, p)
	copy(m.origin[off:], p)
}

func (m *snapMachine) writeSnap(rt *rapid.T) {
	names := m.names(readable)
	if len(names) == 0 {
		rt.Skip("no snapshot to write")
	}
	name := rapid.SampledFrom(names).Draw(rt, "snap")
	off, p := drawWrite(rt)
	m.mustWrite(rt, name, off, p)
	copy(m.snaps[name].data[off:], p)
}

func (m *snapMachine) remove(rt *rapid.T) {
	names := m.names(all)
	if len(names) == 0 {
		rt.Skip("no snapshot to remove")
	}
	name := rapid.SampledFrom(names).Draw(rt, "snap")
	if err := m.c.SnapshotRemove(bg, name); err != nil {
		rt.Fatalf("snapshot remove %s: %v", name, err)
	}
	delete(m.snaps, name)
}

func (m *snapMachine) merge(rt *rapid.T) {
	names := m.names(mergeable)
	if len(names) == 0 {
		rt.Skip("no persistent snapshot to merge")
	}
	name := rapid.SampledFrom(names).Draw(rt, "snap")
	s, err := m.c.SnapshotMerge(bg, name, wire.SnapshotMerge{})
	if err != nil || s.State != wire.SnapshotMerged {
		rt.Fatalf("snapshot merge %s: %+v, %v", name, s, err)
	}
	m.origin = m.snaps[name].data
	delete(m.snaps, name)
}

func (m *snapMachine) restart(rt *rapid.T) {
	m.stop(rt)
	m.start(rt)
	for _, s := range m.snaps {
		s.lost = s.lost || s.transient
	}
}

func (m *snapMachine) check(rt *rapid.T) {
	got, err := m.c.ReadData(bg, "vol", 0, modelSize)
	if err != nil || !bytes.Equal(got, m.origin) {
		rt.Fatalf("origin differs from the model at byte %d (%v)", testutil.FirstDiff(got, m.origin), err)
	}
	for _, name := range m.names(all) {
		s := m.snaps[name]
		got, err := m.c.ReadData(bg, name, 0, modelSize)
		switch {
		case s.lost && err == nil:
			rt.Fatalf("%s: a transient snapshot read after a restart", name)
		case !s.lost && (err != nil || !bytes.Equal(got, s.data)):
			rt.Fatalf("%s differs from the model at byte %d (%v)", name, testutil.FirstDiff(got, s.data), err)
		}
	}
	list, err := m.c.Snapshots(bg, "vol")
	if err != nil {
		rt.Fatal(err)
	}
	var listed []string
	for _, s := range list {
		listed = append(listed, s.Name)
		want := wire.SnapshotActive
		if m.snaps[s.Name] != nil && m.snaps[s.Name].lost {
			want = wire.SnapshotError
		}
		if s.State != want || s.Origin != "vol" {
			rt.Fatalf("listed %+v, want state %s", s, want)
		}
	}
	if want := m.names(all); strings.Join(listed, " ") != strings.Join(want, " ") {
		rt.Fatalf("snapshot list %v, model %v", listed, want)
	}
	if in, _ := m.c.Info(bg, "vol"); in.Capabilities != m.caps.Capabilities || in.FixedCaps != m.caps.FixedCaps || in.Suspended {
		rt.Fatalf("origin info %+v, at the start %+v", in, m.caps)
	}
}
