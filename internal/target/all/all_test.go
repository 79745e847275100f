package all_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/dm/targettest"
	"github.com/daxsnap/daxsnap/internal/target/all"
)

func TestRegister(t *testing.T) {
	r := dm.NewRegistry()
	all.Register(r)
	if got, want := r.Names(), []string{"error", "linear", "snapshot", "snapshot-merge", "snapshot-origin", "striped", "zero"}; !slices.Equal(got, want) {
		t.Errorf("registered %q, want %q", got, want)
	}
	for _, tt := range r.Types() {
		if tt.New == nil || tt.Version == [3]int{} {
			t.Errorf("%s: no constructor or no version", tt.Name)
		}
	}
}

// mixed maps all four targets over three devices; the second linear line
// deliberately aliases part of /dev/b that the first striped line uses, so
// the model must agree on shared bytes.
const mixed = `0 32 linear /dev/a 8
32 48 striped 2 8 /dev/b 0 /dev/c 16
80 16 zero
96 8 error
104 24 linear /dev/b 12
128 16 striped 1 8 /dev/c 48
`

func mixedCase(caps backing.Capability) targettest.TableCase {
	return targettest.TableCase{
		Types: all.Types(),
		Devices: []targettest.Device{
			{Name: "/dev/a", Size: 64 * dm.SectorSize, Caps: caps},
			{Name: "/dev/b", Size: 48 * dm.SectorSize, Caps: caps},
			{Name: "/dev/c", Size: 64 * dm.SectorSize, Caps: caps},
		},
		Table: mixed,
		Model: targettest.TableModel(
			targettest.Line{Len: 32, Model: targettest.LinearModel(0, 8)},
			targettest.Line{Len: 48, Model: targettest.StripedModel(8, targettest.Stripe{Dev: 1, Offset: 0}, targettest.Stripe{Dev: 2, Offset: 16})},
			targettest.Line{Len: 16, Model: targettest.ZeroModel()},
			targettest.Line{Len: 8, Model: targettest.ErrorModel()},
			targettest.Line{Len: 24, Model: targettest.LinearModel(1, 12)},
			targettest.Line{Len: 16, Model: targettest.StripedModel(8, targettest.Stripe{Dev: 2, Offset: 48})},
		),
		TableText: "0 32 linear /dev/a 8\n" +
			"32 48 striped 2 8 /dev/b 0 /dev/c 16\n" +
			"80 16 zero \n" +
			"96 8 error \n" +
			"104 24 linear /dev/b 12\n" +
			"128 16 striped 1 8 /dev/c 48\n",
		StatusText: "0 32 linear \n" +
			"32 48 striped 2 /dev/b /dev/c 1 AA\n" +
			"80 16 zero \n" +
			"96 8 error \n" +
			"104 24 linear \n" +
			"128 16 striped 1 /dev/c 1 A\n",
	}
}

// TestAll_mixedTable is the property test of a whole table through the dm
// core: I/O split across lines of every type against the table model.
func TestAll_mixedTable(t *testing.T) {
	t.Run("dax", func(t *testing.T) { targettest.RunTable(t, mixedCase(backing.DAX|backing.Sync)) })
	t.Run("file", func(t *testing.T) { targettest.RunTable(t, mixedCase(0)) })
}

// TestAll_errorKeepsDAX: a live DAX device may have its table replaced by
// `error` (the error target counts as DAX-capable, as in the kernel), but
// not by `zero`, which has no direct access.
func TestAll_errorKeepsDAX(t *testing.T) {
	mem := backingtest.NewMem("/dev/pmem0", 64*dm.SectorSize, backing.DAX|backing.Sync)
	reg := dm.NewRegistry()
	all.Register(reg)
	m := dm.NewManager(reg, dm.NewDevicePool(backingtest.Opener(mem)))
	dev, err := m.Create("vol", dm.CreateOptions{Table: "0 64 linear /dev/pmem0 0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Load("0 64 zero"); !errors.Is(err, dm.ErrDAXChange) {
		t.Errorf("loading zero over a DAX device: %v, want %v", err, dm.ErrDAXChange)
	}
	if err := dev.Load("0 64 error"); err != nil {
		t.Fatalf("loading error over a DAX device: %v", err)
	}
	if err := dev.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.DirectAccess(0, 4096); !errors.Is(err, dm.ErrIO) {
		t.Errorf("DirectAccess through error = %v, want %v", err, dm.ErrIO)
	}
	if err := m.Remove("vol", dm.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
}
