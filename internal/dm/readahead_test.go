package dm_test

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// Ensure that a device's read-ahead is the kernel's: 256 sectors (128
// KiB) for a table that hints nothing, twice striped's chunk × stripes,
// the same for a linear on top of a striped mapped device (the optimal
// I/O size passes up the stack), the least common multiple where a
// table's lines hint differently, and 0 without a live table.
func TestReadAhead(t *testing.T) {
	m, _ := extentRig(t)
	create := func(name, table string) *dm.Device {
		t.Helper()
		d, err := m.Create(name, dm.CreateOptions{Table: table})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		t.Cleanup(func() { m.Remove(name, dm.RemoveOptions{}) })
		return d
	}
	// io_opt 2 × 128 KiB: read-ahead 2 × 256 KiB = 1024 sectors.
	str := create("str", "0 4096 striped 2 256 a 0 b 0")
	lin := create("lin", "0 4096 linear /dev/mapper/str 0")
	// Another line of io_opt 3 × 32 KiB: lcm(256 KiB, 96 KiB) = 768 KiB.
	mix := create("mix", "0 2048 linear /dev/mapper/str 0\n2048 384 striped 3 64 plain 0 plain 256 plain 512")
	plain := create("plain", "0 8 linear plain 1024")
	empty := create("empty", "")
	for _, c := range []struct {
		d    *dm.Device
		want uint64
	}{{str, 1024}, {lin, 1024}, {mix, 3072}, {plain, 256}, {empty, 0}} {
		if got := c.d.ReadAhead(); got != c.want || c.d.Info().ReadAhead != c.want {
			t.Errorf("%s: read-ahead %d (Info %d), want %d", c.d.Name(), got, c.d.Info().ReadAhead, c.want)
		}
	}
}
