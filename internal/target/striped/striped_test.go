package striped_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/dm/targettest"
	"github.com/daxsnap/daxsnap/internal/target/striped"
)

const sector = dm.SectorSize

func devs(caps backing.Capability, sectors int64, names ...string) []targettest.Device {
	var out []targettest.Device
	for _, n := range names {
		out = append(out, targettest.Device{Name: n, Size: sectors * sector, Caps: caps})
	}
	return out
}

var threeArgs = []string{"3", "8", "/dev/s0", "0", "/dev/s1", "8", "/dev/s2", "16"}

// with returns threeArgs with argument i replaced by v.
func with(i int, v string) []string {
	a := slices.Clone(threeArgs)
	a[i] = v
	return a
}

var ctorErrors = []targettest.CtorError{
	{Name: "no-args", Args: nil,
		Want: "want <#stripes> <chunk_size> followed by a <dev> <offset> pair per stripe, got 0 argument(s)"},
	{Name: "one-arg", Args: []string{"3"}, Want: `got 1 argument(s) ("3")`},
	{Name: "stripes-word", Args: with(0, "x"), Want: `invalid stripe count "x": want a number from 1 to 4294967295`},
	{Name: "stripes-zero", Args: with(0, "0"), Want: `invalid stripe count "0"`},
	{Name: "stripes-negative", Args: with(0, "-3"), Want: `invalid stripe count "-3"`},
	{Name: "stripes-overflow", Args: with(0, "4294967296"), Want: `invalid stripe count "4294967296"`},
	{Name: "chunk-word", Args: with(1, "x"), Want: `invalid chunk size "x": want a power of two ≥ 8 sectors`},
	{Name: "chunk-negative", Args: with(1, "-8"), Want: `invalid chunk size "-8": want a power of two ≥ 8 sectors`},
	{Name: "chunk-overflow", Args: with(1, "4294967296"), Want: `invalid chunk size "4294967296"`},
	{Name: "chunk-zero", Args: with(1, "0"), Want: "invalid chunk size 0: must be a power of two ≥ 8 sectors"},
	{Name: "chunk-7", Args: with(1, "7"), Want: "invalid chunk size 7: must be a power of two ≥ 8 sectors"},
	{Name: "chunk-4-below-minimum", Args: with(1, "4"), Want: "invalid chunk size 4: must be a power of two ≥ 8 sectors"},
	{Name: "chunk-not-power-of-two", Args: with(1, "24"), Want: "invalid chunk size 24: must be a power of two ≥ 8 sectors"},
	{Name: "too-few-pairs", Args: threeArgs[:5],
		Want: "3 stripe(s) need 8 arguments (<#stripes> <chunk_size> followed by a <dev> <offset> pair per stripe), got 5"},
	{Name: "half-pair", Args: threeArgs[:7], Want: "3 stripe(s) need 8 arguments"},
	{Name: "too-many", Args: append(slices.Clone(threeArgs), "/dev/s0"), Want: "3 stripe(s) need 8 arguments"},
	{Name: "huge-stripe-count", Args: with(0, "4294967295"), Want: "4294967295 stripe(s) need 8589934592 arguments"},
	{Name: "length-not-row-multiple", Len: 100, Args: threeArgs,
		Want: "target length 100 is not a multiple of chunk size × stripes = 8 × 3 = 24 sectors; make it 96 or 120"},
	{Name: "length-below-one-row", Len: 8, Args: threeArgs, Want: "target length 8 is not a multiple of chunk size × stripes = 8 × 3 = 24 sectors; make it 24"},
	// 99 divides by 3 stripes but the 33-sector width not by the chunk size.
	{Name: "width-not-chunk-multiple", Len: 99, Args: threeArgs, Want: "target length 99 is not a multiple"},
	{Name: "offset-word", Args: with(5, "x"), Want: `stripe 2 of 3: invalid offset "x": want a sector number`},
	{Name: "offset-negative", Args: with(7, "-16"), Want: `stripe 3 of 3: invalid offset "-16": want a sector number`},
	{Name: "offset-overflow", Args: with(3, "18446744073709551616"),
		Want: `stripe 1 of 3: invalid offset "18446744073709551616": larger than the largest sector number 18014398509481983`},
	{Name: "offset-plus-width-overflows", Args: with(3, "18014398509481983"), Want: "stripe 1 of 3: device /dev/s0: sectors 18014398509481983+32 overflow"},
	{Name: "device-too-small", Args: with(7, "24"),
		Want: "stripe 3 of 3: device /dev/s2 has 48 sectors (24576 bytes), too small for sectors 24..56"},
	{Name: "missing-device", Args: with(4, "/dev/nothing"), Want: "stripe 2 of 3: open /dev/nothing: no such file or directory"},
}

func TestStriped_conformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    targettest.Case
	}{
		{"three-stripes-dax", targettest.Case{
			Devices: devs(backing.DAX|backing.Sync, 48, "/dev/s0", "/dev/s1", "/dev/s2"),
			Len:     96,
			Args:    threeArgs,
			Model: targettest.StripedModel(8,
				targettest.Stripe{Dev: 0, Offset: 0}, targettest.Stripe{Dev: 1, Offset: 8}, targettest.Stripe{Dev: 2, Offset: 16}),
			Table:      "3 8 /dev/s0 0 /dev/s1 8 /dev/s2 16",
			Info:       "3 /dev/s0 /dev/s1 /dev/s2 1 AAA",
			CtorErrors: ctorErrors,
		}},
		{"three-stripes-file", targettest.Case{
			Devices: devs(0, 48, "/dev/s0", "/dev/s1", "/dev/s2"),
			Len:     96,
			Args:    threeArgs,
			Model: targettest.StripedModel(8,
				targettest.Stripe{Dev: 0, Offset: 0}, targettest.Stripe{Dev: 1, Offset: 8}, targettest.Stripe{Dev: 2, Offset: 16}),
			Table: "3 8 /dev/s0 0 /dev/s1 8 /dev/s2 16",
			Info:  "3 /dev/s0 /dev/s1 /dev/s2 1 AAA",
		}},
		// Two stripes on one device, as the kernel allows; 16-sector chunks.
		{"shared-device", targettest.Case{
			Devices:    devs(backing.DAX, 160, "/dev/m"),
			Len:        64,
			Args:       []string{"2", "16", "/dev/m", "0", "/dev/m", "64"},
			Model:      targettest.StripedModel(16, targettest.Stripe{Dev: 0, Offset: 0}, targettest.Stripe{Dev: 0, Offset: 64}),
			Table:      "2 16 /dev/m 0 /dev/m 64",
			Info:       "2 /dev/m /dev/m 1 AA",
			CtorErrors: []targettest.CtorError{{Name: "second-stripe-too-small", Args: []string{"2", "16", "/dev/m", "0", "/dev/m", "140"}, Want: "stripe 2 of 2: device /dev/m has 160 sectors"}},
		}},
		{"one-stripe", targettest.Case{
			Devices: devs(backing.DAX, 40, "/dev/s0"),
			Len:     32,
			Args:    []string{"1", "8", "/dev/s0", "4"},
			Model:   targettest.StripedModel(8, targettest.Stripe{Dev: 0, Offset: 4}),
			Table:   "1 8 /dev/s0 4",
			Info:    "1 /dev/s0 1 A",
		}},
	} {
		tc.c.Type = striped.Type
		t.Run(tc.name, func(t *testing.T) { targettest.Run(t, tc.c) })
	}
}

func TestStriped_Type(t *testing.T) {
	if striped.Type.Name != "striped" || striped.Type.Version != [3]int{1, 6, 0} {
		t.Errorf("Type = %s v%v, want striped v[1 6 0] (dm-stripe.c)", striped.Type.Name, striped.Type.Version)
	}
}

// rig opens named devices (plain Mems, or wrapped ones) through a pool.
type rig struct {
	mems map[string]*backingtest.Mem
	devs map[string]backing.Device
}

func newRig(caps backing.Capability, sectors int64, names ...string) *rig {
	r := &rig{mems: map[string]*backingtest.Mem{}, devs: map[string]backing.Device{}}
	for _, n := range names {
		m := backingtest.NewMem(n, sectors*sector, caps)
		r.mems[n], r.devs[n] = m, m
	}
	return r
}

func (r *rig) build(t *testing.T, length dm.Sector, args ...string) dm.Target {
	t.Helper()
	pool := dm.NewDevicePool(func(name string, _ backing.Options) (backing.Device, error) {
		if d, ok := r.devs[name]; ok {
			return d, nil
		}
		return nil, fmt.Errorf("open %s: no such file or directory", name)
	})
	ctx := dm.NewCtorContext(pool, "vol", 0, length, dm.ReadWrite)
	tgt, err := striped.Type.New(ctx, args)
	if err != nil {
		t.Fatalf("New(%q): %v", args, err)
	}
	t.Cleanup(ctx.Release)
	return tgt
}

func TestStriped_ReadAt_layout(t *testing.T) {
	r := newRig(0, 48, "/dev/s0", "/dev/s1", "/dev/s2")
	tgt := r.build(t, 96, threeArgs...)
	// Chunk k (4 KiB) of the target is chunk k/3 of stripe k%3.
	for k := range 12 {
		p := []byte(fmt.Sprintf("chunk%02d", k))
		if _, err := tgt.WriteAt(p, int64(k)*8*sector+100); err != nil {
			t.Fatal(err)
		}
	}
	starts := []int64{0, 8, 16}
	for k := range 12 {
		dev := r.mems[fmt.Sprintf("/dev/s%d", k%3)]
		at := (starts[k%3]+int64(k/3)*8)*sector + 100
		if got, want := string(dev.Bytes()[at:at+7]), fmt.Sprintf("chunk%02d", k); got != want {
			t.Errorf("chunk %d: %s at byte %d holds %q, want %q", k, dev.Path(), at, got, want)
		}
	}
}

func TestStriped_DirectAccess_stopsAtChunkEnd(t *testing.T) {
	r := newRig(backing.DAX, 48, "/dev/s0", "/dev/s1", "/dev/s2")
	da := r.build(t, 96, threeArgs...).(dm.DirectAccesser)
	for _, tc := range []struct {
		name    string
		off, n  int64
		dev     string
		devOff  int64
		wantLen int
	}{
		{"within-chunk", 512, 1024, "/dev/s0", 512, 1024},
		{"across-boundary", 4096 - 512, 8192, "/dev/s0", 4096 - 512, 512},
		{"next-chunk-other-device", 4096, 8192, "/dev/s1", 8 * sector, 4096},
		{"second-row", 3*4096 + 10, 100000, "/dev/s0", 4096 + 10, 4096 - 10},
		{"last-byte", 96*sector - 1, 4096, "/dev/s2", (16+31)*sector + 511, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := da.DirectAccess(tc.off, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if len(p) != tc.wantLen {
				t.Fatalf("DirectAccess(%d, %d) returned %d bytes, want %d", tc.off, tc.n, len(p), tc.wantLen)
			}
			if &p[0] != &r.mems[tc.dev].Bytes()[tc.devOff] {
				t.Errorf("DirectAccess(%d, %d) is not %s's memory at byte %d", tc.off, tc.n, tc.dev, tc.devOff)
			}
		})
	}
}

// recording counts the discard and write-zeroes requests a device gets.
type recording struct {
	*backingtest.Mem
	mu    sync.Mutex
	calls []string
}

func (d *recording) Discard(off, n int64) error {
	d.mu.Lock()
	d.calls = append(d.calls, fmt.Sprintf("discard %d+%d", off, n))
	d.mu.Unlock()
	return d.Mem.Discard(off, n)
}

func (d *recording) WriteZeroes(off, n int64) error {
	d.mu.Lock()
	d.calls = append(d.calls, fmt.Sprintf("zeroes %d+%d", off, n))
	d.mu.Unlock()
	return d.Mem.WriteZeroes(off, n)
}

// TestStriped_Discard_onePerStripe shows a range is sent as one contiguous
// request per stripe, as dm-stripe sends num_discard_bios = #stripes.
func TestStriped_Discard_onePerStripe(t *testing.T) {
	r := newRig(0, 48, "/dev/s0", "/dev/s1", "/dev/s2")
	rec := map[string]*recording{}
	for n, m := range r.mems {
		rec[n] = &recording{Mem: m}
		r.devs[n] = rec[n]
	}
	tgt := r.build(t, 96, threeArgs...)
	// Chunks 1 (from its byte 100) to 7 (up to its byte 200): s0 gets its
	// chunks 1 and 2 (target chunks 3, 6), s1 its 0 (from 100), 1 and 2
	// (target 1, 4, 7 up to 200), s2 its 0 and 1 (target 2, 5).
	if err := tgt.Discard(4096+100, 6*4096-100+200); err != nil {
		t.Fatal(err)
	}
	if err := tgt.WriteZeroes(0, 96*sector); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"/dev/s0": {"discard 4096+8192", "zeroes 0+16384"},
		"/dev/s1": {"discard 4196+8292", "zeroes 4096+16384"},
		"/dev/s2": {"discard 8192+8192", "zeroes 8192+16384"},
	}
	for n, w := range want {
		if !slices.Equal(rec[n].calls, w) {
			t.Errorf("%s got %q, want %q", n, rec[n].calls, w)
		}
	}
}

func TestStriped_Flush_eachDeviceOnce(t *testing.T) {
	r := newRig(0, 160, "/dev/m", "/dev/n")
	tgt := r.build(t, 96, "3", "16", "/dev/m", "0", "/dev/n", "0", "/dev/m", "64")
	if err := tgt.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, n := r.mems["/dev/m"].Flushes.Load(), r.mems["/dev/n"].Flushes.Load(); m != 1 || n != 1 {
		t.Errorf("flushes: /dev/m %d, /dev/n %d; want 1 each", m, n)
	}
}

// failing fails reads, writes and flushes, like a dying disk.
type failing struct{ *backingtest.Mem }

var errMedium = errors.New("medium error")

func (failing) ReadAt([]byte, int64) (int, error)  { return 0, errMedium }
func (failing) WriteAt([]byte, int64) (int, error) { return 0, errMedium }
func (failing) Flush() error                       { return errMedium }

// unsupported refuses write-zeroes, which is not the device's fault.
type unsupported struct{ *backingtest.Mem }

func (unsupported) WriteZeroes(int64, int64) error { return dm.ErrNotSupported }

// TestStriped_StatusInfo_health shows a stripe turns from A to D once an
// I/O to its device fails, as stripe_end_io counts errors.
func TestStriped_StatusInfo_health(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		io   func(dm.Target) error
		want string
	}{
		{"healthy", []string{"2", "8", "/dev/good", "0", "/dev/bad", "0"},
			func(dm.Target) error { return nil }, "2 /dev/good /dev/bad 1 AA"},
		{"read-error", []string{"2", "8", "/dev/good", "0", "/dev/bad", "0"},
			func(t dm.Target) error { _, err := t.ReadAt(make([]byte, 8192), 0); return err }, "2 /dev/good /dev/bad 1 AD"},
		{"write-error", []string{"2", "8", "/dev/bad", "0", "/dev/good", "0"},
			func(t dm.Target) error { _, err := t.WriteAt(make([]byte, 512), 0); return err }, "2 /dev/bad /dev/good 1 DA"},
		{"flush-error", []string{"2", "8", "/dev/good", "0", "/dev/bad", "0"},
			func(t dm.Target) error { return t.Flush() }, "2 /dev/good /dev/bad 1 AD"},
		{"shared-bad-device", []string{"3", "8", "/dev/bad", "0", "/dev/good", "0", "/dev/bad", "8"},
			func(t dm.Target) error { _, err := t.ReadAt(make([]byte, 512), 0); return err }, "3 /dev/bad /dev/good /dev/bad 1 DAD"},
		{"not-supported-is-not-a-failure", []string{"2", "8", "/dev/good", "0", "/dev/nozero", "0"},
			func(t dm.Target) error { return t.WriteZeroes(0, 16*sector) }, "2 /dev/good /dev/nozero 1 AA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(0, 32, "/dev/good", "/dev/bad", "/dev/nozero")
			r.devs["/dev/bad"] = failing{r.mems["/dev/bad"]}
			r.devs["/dev/nozero"] = unsupported{r.mems["/dev/nozero"]}
			tgt := r.build(t, dm.Sector(8*(len(tc.args)-2)/2), tc.args...)
			err := tc.io(tgt)
			if tc.name != "healthy" && err == nil {
				t.Fatalf("the I/O succeeded on a failing device")
			}
			if got := tgt.Status(dm.StatusInfo); got != tc.want {
				t.Errorf("StatusInfo = %q, want %q", got, tc.want)
			}
		})
	}
}
