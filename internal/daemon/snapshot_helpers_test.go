package daemon_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// fileVol creates device name as a linear map of a new regular file of
// size bytes in the test's directory (ext4 here: not DAX-capable).
func (e *env) fileVol(name string, size int64) string {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), name+".img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		e.t.Fatal(err)
	}
	e.create(name, linear(path, int(size/512)))
	return path
}

// pmemVol creates device name as a linear map of a memory region (tmpfs:
// DAX-capable, with userfaultfd write-protect).
func (e *env) pmemVol(name string, size int64) string {
	e.t.Helper()
	path := e.region(name+"-mem", size)
	e.create(name, linear(path, int(size/512)))
	return path
}

func (e *env) snap(origin, name string, opts ...func(*wire.SnapshotCreate)) wire.Snapshot {
	e.t.Helper()
	req := wire.SnapshotCreate{Origin: origin, Name: name}
	for _, o := range opts {
		o(&req)
	}
	s, err := e.c.SnapshotCreate(bg, req)
	if err != nil {
		e.t.Fatalf("snapshot create %s %s: %v", origin, name, err)
	}
	return s
}

func withChunk(n int64) func(*wire.SnapshotCreate) {
	return func(r *wire.SnapshotCreate) { r.ChunkSize = n }
}

func transient(r *wire.SnapshotCreate) { r.Transient = true }

func (e *env) write(name string, off int64, p []byte) {
	e.t.Helper()
	e.must("write "+name, e.c.WriteData(bg, name, off, p))
}

func (e *env) read(name string, off, n int64) []byte {
	e.t.Helper()
	p, err := e.c.ReadData(bg, name, off, n)
	if err != nil {
		e.t.Fatalf("read %s: %v", name, err)
	}
	return p
}

// wantData checks that device name reads as want from offset 0.
func (e *env) wantData(name string, want []byte) {
	e.t.Helper()
	got := e.read(name, 0, int64(len(want)))
	if i := testutil.FirstDiff(got, want); i >= 0 {
		e.t.Fatalf("%s differs from the model at byte %d (chunk %d of 4 KiB): got %#x, want %#x", name, i, i/4096, got[i], want[i])
	}
}

// devNames lists the devices.
func (e *env) devNames() []string {
	e.t.Helper()
	devs, err := e.c.Devices(bg)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, d := range devs {
		out = append(out, d.Name)
	}
	return out
}

func (e *env) wantDevices(want ...string) {
	e.t.Helper()
	slices.Sort(want)
	if got := e.devNames(); !slices.Equal(got, want) {
		e.t.Fatalf("devices %v, want %v", got, want)
	}
}

// cowFiles lists the daemon's COW directories: STATE/cow, then the one
// on tmpfs for memory origins (its files only, not its lost+found).
func (e *env) cowFiles() []string {
	entries, _ := os.ReadDir(filepath.Join(e.cfg.StateDir, snapshots.COWSubdir))
	var out []string
	for _, de := range entries {
		out = append(out, de.Name())
	}
	mem, _ := os.ReadDir(e.memCOWDir())
	for _, de := range mem {
		if de.Type().IsRegular() {
			out = append(out, de.Name())
		}
	}
	return out
}

// memCOWDir is where the daemon puts the COWs of memory origins.
func (e *env) memCOWDir() string { return snapshots.MemCOWDirIn(e.cfg.PmemDir, e.cfg.StateDir) }

func (e *env) snapList(origin string) []wire.Snapshot {
	e.t.Helper()
	l, err := e.c.Snapshots(bg, origin)
	if err != nil {
		e.t.Fatalf("snapshot list %s: %v", origin, err)
	}
	return l
}

func randBytes(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return p
}

func hasAll(s string, frags ...string) bool {
	for _, f := range frags {
		if !strings.Contains(s, f) {
			return false
		}
	}
	return true
}
