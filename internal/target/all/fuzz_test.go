package all_test

import (
	"errors"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/target/all"
)

// FuzzBuildTable feeds table text to the real targets: building never
// panics or leaks a device, errors are classified, and every accepted table
// re-prints through `table` to text that builds an identical table.
func FuzzBuildTable(f *testing.F) {
	f.Add(mixed)
	for _, s := range []string{
		"0 8 linear /dev/a 0",
		"0 16 striped 2 8 /dev/a 0 /dev/b 0",
		"0 8 zero\n8 8 error",
		"0 8 linear /dev/a 00010",
		"0 24 striped 3 8 /dev/a 0 /dev/b 0 /dev/c 0",
		"0 8 striped 1 8 /dev/c 4095",
		"0 9 linear /dev/a x",
	} {
		f.Add(s)
	}
	reg := dm.NewRegistry()
	all.Register(reg)
	f.Fuzz(func(t *testing.T, text string) {
		a := backingtest.NewMem("/dev/a", 1<<20, backing.DAX)
		b := backingtest.NewMem("/dev/b", 1<<20, 0)
		c := backingtest.NewMem("/dev/c", 1<<21, backing.DAX|backing.Sync)
		pool := dm.NewDevicePool(backingtest.Opener(a, b, c))
		tab, err := dm.BuildTable(reg, pool, "fuzz", text, dm.ReadWrite)
		if err != nil {
			if !errors.Is(err, dm.ErrInvalidTable) && !errors.Is(err, dm.ErrUnknownTarget) {
				t.Fatalf("unclassified error: %v", err)
			}
			if pool.Len() != 0 {
				t.Fatalf("failed build left %d devices open", pool.Len())
			}
			return
		}
		printed := tab.Text()
		again, err := dm.BuildTable(reg, pool, "fuzz", printed, dm.ReadWrite)
		if err != nil {
			t.Fatalf("table %q re-printed as %q, which does not build: %v", text, printed, err)
		}
		if again.Text() != printed || again.Capabilities() != tab.Capabilities() || again.Size() != tab.Size() {
			t.Fatalf("re-print not identical: %q -> %q", printed, again.Text())
		}
		if err := errors.Join(tab.Close(), again.Close()); err != nil {
			t.Fatal(err)
		}
		if pool.Len() != 0 {
			t.Fatalf("closed tables left %d devices open", pool.Len())
		}
	})
}
