package dm_test

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

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	errortarget "github.com/daxsnap/daxsnap/internal/target/error"
	"github.com/daxsnap/daxsnap/internal/target/linear"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
	"github.com/daxsnap/daxsnap/internal/target/striped"
)

// mapMem is a test memory device that is also a MappingSource (its "file"
// is a fake descriptor: the tests here only compare offsets).
type mapMem struct {
	*backingtest.Mem
	fd   uintptr
	page int64
}

func (m *mapMem) MapFile() (uintptr, int64) { return m.fd, 4096 }
func (m *mapMem) PageSize() int64           { return m.page }

// nested is a backing device that is another mapped device.
type nested struct {
	*backingtest.Mem
	dev *dm.Device
}

func (n *nested) Extents(off, len int64) ([]dm.Extent, error) { return n.dev.Extents(off, len) }

func extentRig(t *testing.T) (*dm.Manager, map[string]backing.Device) {
	t.Helper()
	devs := map[string]backing.Device{
		"a":     &mapMem{Mem: backingtest.NewMem("a", mib, backing.DAX|backing.WPFault), fd: 10, page: 4096},
		"b":     &mapMem{Mem: backingtest.NewMem("b", mib, backing.DAX|backing.WPFault), fd: 11, page: 4096},
		"plain": backingtest.NewMem("plain", mib, backing.DAX|backing.WPFault), // DAX, but no file to pass
		"file":  backingtest.NewMem("file", mib, 0),
	}
	reg := dm.NewRegistry()
	reg.Register(linear.Type)
	reg.Register(striped.Type)
	reg.Register(snapshot.OriginType)
	reg.Register(errortarget.Type)
	m := dm.NewManager(reg, dm.NewDevicePool(func(name string, _ backing.Options) (backing.Device, error) {
		if d, ok := devs[name]; ok {
			return d, nil
		}
		return nil, fmt.Errorf("open %s: no such file or directory", name)
	}))
	return m, devs
}

type ext struct {
	off, n int64
	src    string
	srcOff int64
}

func simplify(exts []dm.Extent) []ext {
	var out []ext
	for _, e := range exts {
		out = append(out, ext{e.Off, e.Len, e.Source.(backing.Device).Path(), e.SourceOff})
	}
	return out
}

func TestExtents(t *testing.T) {
	m, devs := extentRig(t)
	create := func(name, table string) *dm.Device {
		d, err := m.Create(name, dm.CreateOptions{Table: table})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return d
	}
	lin := create("lin", "0 8 linear a 8\n8 8 linear a 16\n16 16 linear b 0\n")
	str := create("str", "0 64 striped 2 8 a 0 b 64\n")
	org := create("org", "0 2048 snapshot-origin a\n")
	inner := create("inner", "0 32 linear b 32\n")
	devs["nest"] = &nested{Mem: backingtest.NewMem("nest", 32*512, backing.DAX|backing.WPFault), dev: inner}
	nest := create("outer", "0 8 linear a 0\n8 16 linear nest 8\n")

	cases := []struct {
		name   string
		dev    *dm.Device
		off, n int64
		want   []ext
	}{
		{"linear-merged", lin, 0, 8192, []ext{{0, 8192, "a", 4096}}},
		{"linear-two-devices", lin, 4096, 12288, []ext{{4096, 4096, "a", 8192}, {8192, 8192, "b", 0}}},
		{"linear-tail", lin, 12288, 4096, []ext{{12288, 4096, "b", 4096}}},
		{"striped-chunks", str, 0, 32768, []ext{
			{0, 4096, "a", 0}, {4096, 4096, "b", 32768}, {8192, 4096, "a", 4096}, {12288, 4096, "b", 36864},
			{16384, 4096, "a", 8192}, {20480, 4096, "b", 40960}, {24576, 4096, "a", 12288}, {28672, 4096, "b", 45056}}},
		{"striped-mid-chunk", str, 6144, 4096, []ext{{6144, 2048, "b", 34816}, {8192, 2048, "a", 4096}}},
		{"snapshot-origin", org, 512, 1<<20 - 512, []ext{{512, 1<<20 - 512, "a", 512}}},
		{"nested", nest, 0, 12288, []ext{{0, 4096, "a", 0}, {4096, 8192, "b", 16384 + 4096}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.dev.Extents(c.off, c.n)
			if err != nil {
				t.Fatal(err)
			}
			if g := simplify(got); fmt.Sprint(g) != fmt.Sprint(c.want) {
				t.Errorf("Extents(%d, %d) = %v, want %v", c.off, c.n, g, c.want)
			}
			for _, e := range got {
				if e.PageSize != 4096 {
					t.Errorf("extent %+v: page size %d, want 4096", e, e.PageSize)
				}
				want := []*dm.Device{c.dev}
				if e.Source.(backing.Device).Path() == "b" && c.dev == nest {
					want = append(want, inner)
				}
				if !slices.Equal(e.Via, want) {
					t.Errorf("extent %+v: via %v, want %v", e, e.Via, want)
				}
			}
		})
	}

	errCases := []struct {
		name, table string
		off, n      int64
		is          error
		msg         string
	}{
		{"not-dax", "0 8 linear file 0\n", 0, 4096, dm.ErrNotSupported, "not DAX-capable"},
		{"no-file", "0 8 linear plain 0\n", 0, 4096, dm.ErrNotSupported, "not memory a client can map"},
		{"beyond-end", "0 8 linear a 0\n", 0, 8192, dm.ErrOutOfRange, "device has 4096 bytes"},
		{"negative", "0 8 linear a 0\n", -1, 512, dm.ErrOutOfRange, "offset -1"},
		{"empty", "0 8 linear a 0\n", 0, 0, dm.ErrInvalidArgument, "range of 0 bytes"},
	}
	for i, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			d := create(fmt.Sprintf("err%d", i), c.table)
			_, err := d.Extents(c.off, c.n)
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Extents(%d, %d) = %v; want %v mentioning %q", c.off, c.n, err, c.is, c.msg)
			}
		})
	}

	t.Run("no-live-table", func(t *testing.T) {
		d, err := m.Create("empty", dm.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Extents(0, 512); !errors.Is(err, dm.ErrNoTable) {
			t.Fatalf("Extents without a table = %v, want ErrNoTable", err)
		}
	})
}

func TestWriteGranularity_NoSnapshot(t *testing.T) {
	m, _ := extentRig(t)
	for _, table := range []string{"0 2048 snapshot-origin a\n", "0 2048 linear a 0\n"} {
		d, err := m.Create(strings.Fields(table)[2], dm.CreateOptions{Table: table})
		if err != nil {
			t.Fatal(err)
		}
		if g := d.WriteGranularity(0, mib); g != 0 {
			t.Errorf("%q: WriteGranularity = %d without snapshots, want 0", table, g)
		}
	}
}

// TestExtents_Tmpfs maps the extents of a striped device over two real
// tmpfs files, as a client would, and checks the mapping shows exactly
// what block I/O wrote.
func TestExtents_Tmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-extents-")
	if err != nil {
		t.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var names []string
	for _, n := range []string{"m0", "m1"} {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 2*mib); err != nil {
			t.Fatal(err)
		}
		names = append(names, p)
	}
	reg := dm.NewRegistry()
	reg.Register(linear.Type)
	reg.Register(striped.Type)
	pool := dm.NewDevicePool(backing.Open)
	m := dm.NewManager(reg, pool)
	table := fmt.Sprintf("0 2048 striped 2 16 %s 0 %s 64\n2048 1024 linear %s 2048\n", names[0], names[1], names[0])
	d, err := m.Create("tmpfs", dm.CreateOptions{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Remove("tmpfs", dm.RemoveOptions{}) })
	size := d.Size()
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if _, err := d.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	exts, err := d.Extents(0, size)
	if err != nil {
		t.Fatal(err)
	}
	if len(exts) != mib/8192+1 {
		t.Errorf("%d extents, want %d (one per 8 KiB stripe chunk, then the linear line)", len(exts), mib/8192+1)
	}
	var pos int64
	for _, e := range exts {
		if e.Off != pos {
			t.Fatalf("extent %+v does not start where the previous ended (%d)", e, pos)
		}
		fd, foff := e.Source.MapFile()
		mem, err := unix.Mmap(int(fd), foff+e.SourceOff, int(e.Len), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("mmap extent %+v: %v", e, err)
		}
		if !bytes.Equal(mem, data[e.Off:e.Off+e.Len]) {
			t.Errorf("extent %+v: mapped bytes differ from what was written at device offset %d", e, e.Off)
		}
		unix.Munmap(mem)
		pos += e.Len
	}
	if pos != size {
		t.Errorf("extents cover %d bytes, device has %d", pos, size)
	}
}

// preparer is a backing device that is a mapped device with its own
// copy-before-write (a snapshot-origin below a stacked table): it records
// the PrepareWrite calls that reach it and reports granularity g.
type preparer struct {
	*backingtest.Mem
	g     int64
	calls []string
}

func (p *preparer) PrepareWrite(off, n int64) error {
	p.calls = append(p.calls, fmt.Sprintf("%d+%d", off, n))
	return nil
}

func (p *preparer) WriteGranularity(off int64) int64 { return p.g }

// Ensure that PrepareWrite and WriteGranularity reach a mapped device that
// a table's lines remap onto, at the offsets it sees, so direct stores
// through a table over /dev/mapper/ORIGIN get the origin's copy-out.
func TestPrepareWrite_Stacked(t *testing.T) {
	m, devs := extentRig(t)
	p := &preparer{Mem: backingtest.NewMem("p", mib, backing.DAX|backing.WPFault), g: 65536}
	devs["p"] = p
	top, err := m.Create("top", dm.CreateOptions{Table: "0 16 linear p 8\n16 16 striped 2 8 p 64 a 0\n32 8 linear a 0\n"})
	if err != nil {
		t.Fatal(err)
	}
	if err := top.PrepareWrite(0, 40*512); err != nil {
		t.Fatal(err)
	}
	// linear: [4096, 12288) of p; striped: chunk 0 on p at 32768, chunk 1 on a.
	if got, want := strings.Join(p.calls, " "), "4096+8192 32768+4096"; got != want {
		t.Errorf("PrepareWrite reached p as %q, want %q", got, want)
	}
	if g := top.WriteGranularity(0, 40*512); g != 65536 {
		t.Errorf("WriteGranularity over p = %d, want p's 65536", g)
	}
	if g := top.WriteGranularity(32*512, 8*512); g != 0 {
		t.Errorf("WriteGranularity of the line over a alone = %d, want 0", g)
	}
	p.g = 0
	if g := top.WriteGranularity(0, 40*512); g != 0 {
		t.Errorf("WriteGranularity = %d once p needs no catching, want 0", g)
	}
}

// Ensure that SameMemory holds exactly when every byte stays in the same
// place of the same memory, however the tables split it.
func TestSameMemory(t *testing.T) {
	m, _ := extentRig(t)
	cases := []struct {
		a, b string
		same bool
	}{
		{"0 16 linear a 8\n", "0 8 linear a 8\n8 8 linear a 16\n", true},
		{"0 16 linear a 8\n", "0 16 snapshot-origin a\n", false}, // offset 8 vs 0
		{"0 16 linear a 0\n", "0 16 snapshot-origin a\n", true},
		{"0 16 linear a 0\n", "0 16 linear b 0\n", false},
		{"0 16 linear a 0\n", "0 32 linear a 0\n", false},
		{"0 16 striped 2 8 a 0 b 0\n", "0 8 linear a 0\n8 8 linear b 0\n", true},
		{"0 16 striped 2 8 a 0 b 0\n", "0 8 linear b 0\n8 8 linear a 0\n", false},
		{"0 16 linear a 0\n", "0 16 error\n", false},
	}
	for i, c := range cases {
		d, err := m.Create(fmt.Sprintf("d%d", i), dm.CreateOptions{Table: c.a})
		if err != nil {
			t.Fatal(err)
		}
		var got bool
		m.SetSwapGuard(func(_ *dm.Device, live, next *dm.Table) (func(), error) {
			got = dm.SameMemory(live, next)
			return func() {}, nil
		})
		if err := d.Load(c.b); err != nil {
			t.Fatal(err)
		}
		if err := d.Resume(); err != nil {
			t.Fatal(err)
		}
		m.SetSwapGuard(nil)
		if got != c.same {
			t.Errorf("SameMemory(%q, %q) = %v, want %v", c.a, c.b, got, c.same)
		}
	}
}

// Ensure that the guard is asked before the resume suspends the device,
// that a refused swap keeps the live table (running, or suspended when it
// was), that a refused forced removal leaves the device as it was, and
// that an allowed swap releases the guard once.
func TestSwapGuard_Refused(t *testing.T) {
	m, devs := extentRig(t)
	no := errors.New("mapped by pid 42")
	refuse := true
	var released int
	m.SetSwapGuard(func(d *dm.Device, _, _ *dm.Table) (func(), error) {
		// The guard runs with d's control lock held (no Info here), and
		// before the resume suspends d: I/O still flows.
		if !refuse {
			done := make(chan error, 1)
			go func() { _, err := d.ReadAt(make([]byte, 512), 0); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("read during the guard: %v", err)
				}
			case <-time.After(time.Minute):
				t.Error("guard asked with the device suspended by the resume itself")
			}
		}
		if refuse {
			return nil, no
		}
		return func() { released++ }, nil
	})
	d, err := m.Create("g", dm.CreateOptions{Table: "0 16 linear a 0\n"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := devs["a"].WriteAt([]byte("live"), 0); err != nil {
		t.Fatal(err)
	}
	check := func(what string, suspended bool) {
		t.Helper()
		in := d.Info()
		if in.Suspended != suspended || !in.InactiveTable {
			t.Fatalf("%s: %+v, want suspended=%v with the refused table still inactive", what, in, suspended)
		}
		if tbl, _ := d.Table(dm.Live); !strings.Contains(tbl, "linear a 0") {
			t.Fatalf("%s: live table %q, want the old one", what, tbl)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.Load("0 16 linear b 0\n"))
	if err := d.Resume(); !errors.Is(err, no) {
		t.Fatalf("resume = %v, want the guard's refusal", err)
	}
	check("refused resume of a running device", false)
	p := make([]byte, 4)
	if _, err := d.ReadAt(p, 0); err != nil || string(p) != "live" {
		t.Fatalf("read after the refused resume = %q, %v", p, err)
	}
	must(d.Clear()) // suspend, then load: the guard is asked at resume
	must(d.Suspend(dm.SuspendOptions{}))
	must(d.Load("0 16 linear b 0\n"))
	if err := d.Resume(); !errors.Is(err, no) {
		t.Fatalf("resume = %v, want the guard's refusal", err)
	}
	check("refused resume of a suspended device", true)
	must(d.Clear())
	must(d.Resume())
	must(d.Open()) // only an open device's forced removal swaps in an error table
	if err := m.Remove("g", dm.RemoveOptions{Force: true}); !errors.Is(err, no) {
		t.Fatalf("forced remove = %v, want the guard's refusal", err)
	}
	if tbl, _ := d.Table(dm.Live); !strings.Contains(tbl, "linear a 0") || d.Info().Suspended {
		t.Fatalf("after a refused forced remove: table %q, %+v", tbl, d.Info())
	}
	refuse = false
	must(d.Load("0 16 linear b 0\n"))
	must(d.Resume())
	if released != 1 {
		t.Errorf("release called %d times after an allowed swap, want 1", released)
	}

	// load, suspend, resume (LVM's order): asked at suspend, released at
	// resume, not asked twice; a refusal at suspend leaves d running.
	refuse = true
	must(d.Load("0 16 linear a 0\n"))
	if err := d.Suspend(dm.SuspendOptions{}); !errors.Is(err, no) {
		t.Fatalf("suspend with a refused table loaded = %v, want the guard's refusal", err)
	}
	if d.Info().Suspended {
		t.Fatal("suspended after the guard refused")
	}
	refuse = false
	must(d.Suspend(dm.SuspendOptions{}))
	refuse = true // a second ask would fail the resume
	must(d.Resume())
	if released != 2 {
		t.Errorf("release called %d times in all, want 2", released)
	}
	refuse = false
	m.SetSwapGuard(nil)
	must(m.Remove("g", dm.RemoveOptions{Force: true, Deferred: true}))
	must(d.Close())
	if _, err := m.Get("g"); !errors.Is(err, dm.ErrNotFound) {
		t.Fatalf("g after its deferred removal and last close: %v", err)
	}
}
