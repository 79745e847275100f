package backing_test

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
)

// Every kind of device this machine can have runs the conformance suite,
// once writable and once read-only.

func runBoth(t *testing.T, path string) {
	t.Run("rw", func(t *testing.T) { backingtest.Run(t, opener(path, false)) })
	t.Run("ro", func(t *testing.T) { backingtest.Run(t, opener(path, true)) })
}

func TestConformance_Tmpfs(t *testing.T) { runBoth(t, tmpfsFile(t, testSize)) }

func TestConformance_DiskFile(t *testing.T) { runBoth(t, diskFile(t, testSize)) }

func TestConformance_Loop(t *testing.T) { runBoth(t, loopDevice(t, testSize, 0)) }

func TestConformance_Loop4K(t *testing.T) {
	backingtest.Run(t, opener(loopDevice(t, testSize, 4096), false))
}

func TestConformance_Hugetlbfs(t *testing.T) {
	path, _ := filledHugetlbfsFile(t, 2)
	runBoth(t, path)
}

func TestConformance_Mem(t *testing.T) {
	backingtest.Run(t, func(t *testing.T) backing.Device {
		return backingtest.NewMem("mem", testSize, backing.DAX|backing.WPFault)
	})
}

// Media this machine lacks (MAP_SYNC pmem, devdax) get their code paths
// run over tmpfs memory: cache-line write-back instead of msync, zeroing
// through the mapping instead of punching holes.
func TestConformance_SimulatedMedia(t *testing.T) {
	path := tmpfsFile(t, testSize)
	for _, c := range []struct {
		name       string
		kind       backing.Kind
		sync, file bool
	}{
		{"fsdax-sync", backing.KindFSDAX, true, true},
		{"devdax-pmem", backing.KindDevDAX, true, false},
		{"devdax-volatile", backing.KindDevDAX, false, false},
	} {
		// Read-only refusal lives in the shared base and runs on the real media.
		t.Run(c.name, func(t *testing.T) {
			backingtest.Run(t, func(t *testing.T) backing.Device {
				dev, err := backing.OpenMemoryAs(path, c.kind, c.sync, c.file, false)
				if err != nil {
					t.Fatal(err)
				}
				return dev
			})
		})
	}
}
