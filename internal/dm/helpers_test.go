package dm_test

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
)

const mib = 1 << 20

// rig is a manager over in-memory devices: "mem" (DAX, not sync), "pmem"
// (DAX and sync), "file" (no capabilities), each 1 MiB.
type rig struct {
	m               *dm.Manager
	pool            *dm.DevicePool
	mem, pmem, file *backingtest.Mem
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{
		mem:  backingtest.NewMem("mem", mib, backing.DAX|backing.WPFault),
		pmem: backingtest.NewMem("pmem", mib, backing.DAX|backing.Sync),
		file: backingtest.NewMem("file", mib, 0),
	}
	reg := dm.NewRegistry()
	reg.Register(fakeType)
	reg.Register(failType)
	r.pool = dm.NewDevicePool(backingtest.Opener(r.mem, r.pmem, r.file))
	r.m = dm.NewManager(reg, r.pool)
	return r
}

func (r *rig) create(t *testing.T, name, table string) *dm.Device {
	t.Helper()
	d, err := r.m.Create(name, dm.CreateOptions{Table: table})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
