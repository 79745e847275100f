package daemon_test

import (
	"errors"
	"os/exec"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that a hugetlbfs directory is recognised, sizes are checked
// against its page size, and a lack of huge pages is a clear no_space.
func TestDaemon_pmemHugetlb(t *testing.T) {
	testutil.RequireRoot(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "hugetlbfs", "none", mnt).CombinedOutput(); err != nil {
		testutil.Skip(t, "cannot mount hugetlbfs: "+string(out))
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	e := newEnv(t)
	_, err := e.c.PmemCreate(bg, wire.PmemCreate{Name: "h", Size: 3 << 20, Hugetlb: true, Dir: mnt})
	wantCode(t, err, wire.CodeInvalidArgument, "2097152-byte pages", "use 4194304")
	_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: "h", Size: 2 << 20, Hugetlb: true, Dir: t.TempDir()})
	wantCode(t, err, wire.CodeInvalidArgument, "hugetlbfs")
	_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: "h", Size: 2 << 20, Hugetlb: true, Dir: "/nonexistent"})
	wantCode(t, err, wire.CodeInvalidArgument, "mount -t hugetlbfs")

	p, err := e.c.PmemCreate(bg, wire.PmemCreate{Name: "h", Size: 2 << 20, Dir: mnt})
	var ae *api.Error
	switch {
	case err == nil:
		if !p.Hugetlb || p.Filesystem != "hugetlbfs" {
			t.Fatalf("region on hugetlbfs: %+v", p)
		}
		e.must("pmem remove", e.c.PmemRemove(bg, "h"))
	case errors.As(err, &ae):
		wantCode(t, err, wire.CodeNoSpace, "not enough memory", "smaller size")
	default:
		t.Fatal(err)
	}
}
