package linear_test

import (
	"errors"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/dm/targettest"
	"github.com/daxsnap/daxsnap/internal/target/linear"
)

const devSectors = 128

var ctorErrors = []targettest.CtorError{
	{Name: "no-args", Args: nil, Want: "want 2 arguments <dev> <offset>, got 0"},
	{Name: "one-arg", Args: []string{"/dev/pmem0"}, Want: "want 2 arguments <dev> <offset>, got 1"},
	{Name: "three-args", Args: []string{"/dev/pmem0", "0", "0"}, Want: "want 2 arguments <dev> <offset>, got 3"},
	{Name: "offset-word", Args: []string{"/dev/pmem0", "x"}, Want: `invalid offset "x": want a sector number`},
	{Name: "offset-empty", Args: []string{"/dev/pmem0", ""}, Want: `invalid offset "": want a sector number`},
	{Name: "offset-negative", Args: []string{"/dev/pmem0", "-1"}, Want: `invalid offset "-1": want a sector number`},
	{Name: "offset-plus", Args: []string{"/dev/pmem0", "+1"}, Want: `invalid offset "+1": want a sector number`},
	{Name: "offset-hex", Args: []string{"/dev/pmem0", "0x10"}, Want: `invalid offset "0x10": want a sector number`},
	{Name: "offset-fraction", Args: []string{"/dev/pmem0", "1.5"}, Want: `invalid offset "1.5": want a sector number`},
	{Name: "offset-overflows-uint64", Args: []string{"/dev/pmem0", "18446744073709551616"},
		Want: `invalid offset "18446744073709551616": larger than the largest sector number 18014398509481983`},
	{Name: "offset-beyond-max-sectors", Args: []string{"/dev/pmem0", "18014398509481984"},
		Want: "larger than the largest sector number 18014398509481983"},
	{Name: "offset-plus-length-overflows", Args: []string{"/dev/pmem0", "18014398509481983"},
		Want: "sectors 18014398509481983+96 overflow"},
	{Name: "device-too-small-for-offset", Args: []string{"/dev/pmem0", "64"},
		Want: "device /dev/pmem0 has 128 sectors (65536 bytes), too small for sectors 64..160"},
	{Name: "device-too-small-for-length", Len: 129, Args: []string{"/dev/pmem0", "0"},
		Want: "device /dev/pmem0 has 128 sectors (65536 bytes), too small for sectors 0..129"},
	{Name: "missing-device", Args: []string{"/dev/nothing", "0"}, Want: "open /dev/nothing: no such file or directory"},
}

func linearCase(caps backing.Capability) targettest.Case {
	return targettest.Case{
		Type:       linear.Type,
		Devices:    []targettest.Device{{Name: "/dev/pmem0", Size: devSectors * dm.SectorSize, Caps: caps}},
		Len:        96,
		Args:       []string{"/dev/pmem0", "16"},
		Model:      targettest.LinearModel(0, 16),
		Table:      "/dev/pmem0 16",
		Info:       "",
		CtorErrors: ctorErrors,
	}
}

func TestLinear_conformance(t *testing.T) {
	t.Run("dax", func(t *testing.T) { targettest.Run(t, linearCase(backing.DAX|backing.Sync)) })
	t.Run("file", func(t *testing.T) { targettest.Run(t, linearCase(0)) })
}

func TestLinear_Type(t *testing.T) {
	if linear.Type.Name != "linear" || linear.Type.Version != [3]int{1, 5, 0} {
		t.Errorf("Type = %s v%v, want linear v[1 5 0] (dm-linear.c)", linear.Type.Name, linear.Type.Version)
	}
}

// build constructs a linear target over a fresh device.
func build(t *testing.T, caps backing.Capability, length dm.Sector, args ...string) (dm.Target, *backingtest.Mem, *dm.CtorContext) {
	t.Helper()
	mem := backingtest.NewMem("/dev/pmem0", devSectors*dm.SectorSize, caps)
	ctx := dm.NewCtorContext(dm.NewDevicePool(backingtest.Opener(mem)), "vol", 0, length, dm.ReadWrite)
	tgt, err := linear.Type.New(ctx, args)
	if err != nil {
		t.Fatalf("New(%q): %v", args, err)
	}
	t.Cleanup(ctx.Release)
	return tgt, mem, ctx
}

func TestLinear_Status(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		wantTable string
	}{
		{"zero-offset", []string{"/dev/pmem0", "0"}, "/dev/pmem0 0"},
		{"offset", []string{"/dev/pmem0", "32"}, "/dev/pmem0 32"},
		{"leading-zeroes-normalised", []string{"/dev/pmem0", "0032"}, "/dev/pmem0 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt, _, _ := build(t, 0, 64, tc.args...)
			if got := tgt.Status(dm.StatusTable); got != tc.wantTable {
				t.Errorf("StatusTable = %q, want %q", got, tc.wantTable)
			}
			if got := tgt.Status(dm.StatusInfo); got != "" {
				t.Errorf("StatusInfo = %q, want empty (dm-linear prints nothing)", got)
			}
		})
	}
}

func TestLinear_WriteAt_mapsToOffset(t *testing.T) {
	tgt, mem, ctx := build(t, 0, 64, "/dev/pmem0", "16")
	if _, err := tgt.WriteAt([]byte("hello"), 100); err != nil {
		t.Fatal(err)
	}
	if got := string(mem.Bytes()[16*512+100 : 16*512+105]); got != "hello" {
		t.Errorf("device bytes at 16 sectors + 100 = %q, want %q", got, "hello")
	}
	devs := ctx.Devices()
	if len(devs) != 1 || devs[0].Start != 16 || devs[0].Len != 64 {
		t.Errorf("opened devices = %+v, want /dev/pmem0 sectors 16+64", devs)
	}
}

func TestLinear_DirectAccess(t *testing.T) {
	tgt, mem, _ := build(t, backing.DAX, 64, "/dev/pmem0", "16")
	p, err := tgt.(dm.DirectAccesser).DirectAccess(512, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 4096 || &p[0] != &mem.Bytes()[17*512] {
		t.Errorf("DirectAccess(512, 4096) = %d bytes at a different address, want the device's memory at sector 17", len(p))
	}
}

func TestLinear_DirectAccess_failsWithoutDAX(t *testing.T) {
	tgt, _, _ := build(t, 0, 64, "/dev/pmem0", "0")
	if _, err := tgt.(dm.DirectAccesser).DirectAccess(0, 4096); err == nil {
		t.Errorf("DirectAccess on a device without DAX succeeded")
	}
}

// notDAX is a device that has no DirectAccess method at all.
type notDAX struct{ backing.Device }

func TestLinear_DirectAccess_deviceWithoutMethod(t *testing.T) {
	mem := backingtest.NewMem("/dev/plain", devSectors*dm.SectorSize, 0)
	pool := dm.NewDevicePool(func(string, backing.Options) (backing.Device, error) { return notDAX{mem}, nil })
	ctx := dm.NewCtorContext(pool, "vol", 0, 8, dm.ReadWrite)
	defer ctx.Release()
	tgt, err := linear.Type.New(ctx, []string{"/dev/plain", "0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.(dm.DirectAccesser).DirectAccess(0, 512); !errors.Is(err, dm.ErrNotSupported) {
		t.Errorf("DirectAccess = %v, want %v", err, dm.ErrNotSupported)
	}
}

func TestLinear_Flush_reachesDevice(t *testing.T) {
	tgt, mem, _ := build(t, 0, 64, "/dev/pmem0", "0")
	before := mem.Flushes.Load()
	if err := tgt.Flush(); err != nil {
		t.Fatal(err)
	}
	if mem.Flushes.Load() != before+1 {
		t.Errorf("Flush did not reach the device")
	}
}

// TestLinear_readOnlyTable shows a read-only table opens its device
// read-only, so writes fail at the device.
func TestLinear_readOnlyTable(t *testing.T) {
	mem := backingtest.NewMem("/dev/pmem0", devSectors*dm.SectorSize, 0)
	var gotRO bool
	opener := backingtest.Opener(mem)
	pool := dm.NewDevicePool(func(name string, opts backing.Options) (backing.Device, error) {
		gotRO = opts.ReadOnly
		return opener(name, opts)
	})
	ctx := dm.NewCtorContext(pool, "vol", 0, 8, dm.ReadOnly)
	defer ctx.Release()
	if _, err := linear.Type.New(ctx, []string{"/dev/pmem0", "0"}); err != nil {
		t.Fatal(err)
	}
	if !gotRO {
		t.Errorf("a read-only table opened its device read-write")
	}
}
