package backing_test

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Ensure that Open probes each kind of media honestly: what it is, its
// size and block size, and only the capabilities it has.
func TestOpen_probes(t *testing.T) {
	page := int64(os.Getpagesize())
	cases := []struct {
		name     string
		path     func(t *testing.T) (path string, pageSize int64)
		kind     backing.Kind
		caps     string
		lbs      int
		size     int64
		directIO bool
	}{
		{"tmpfs", func(t *testing.T) (string, int64) { return tmpfsFile(t, 3*page+100), page }, backing.KindTmpfs, "dax,wpfault", 512, 3*page + 100, true},
		{"disk file", func(t *testing.T) (string, int64) { return diskFile(t, 12345), 0 }, backing.KindFile, "none", 512, 12345, false},
		{"loop", func(t *testing.T) (string, int64) { return loopDevice(t, testSize, 0), 0 }, backing.KindBlock, "none", 512, testSize, false},
		{"loop 4K", func(t *testing.T) (string, int64) { return loopDevice(t, testSize, 4096), 0 }, backing.KindBlock, "none", 4096, testSize, false},
		{"hugetlbfs", func(t *testing.T) (string, int64) { return filledHugetlbfsFile(t, 1) }, backing.KindHugetlbfs, "dax,wpfault", 512, -1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, pageSize := c.path(t)
			dev, err := backing.Open(path, backing.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			size := c.size
			if size < 0 {
				size = pageSize
			}
			if dev.Kind() != c.kind || dev.Capabilities().String() != c.caps || dev.LogicalBlockSize() != c.lbs || dev.Size() != size {
				t.Errorf("%s: kind %v, caps %v, logical block %d, size %d; want %v, %s, %d, %d",
					path, dev.Kind(), dev.Capabilities(), dev.LogicalBlockSize(), dev.Size(), c.kind, c.caps, c.lbs, size)
			}
			_, isDA := dev.(backing.DirectAccesser)
			ms, isMS := dev.(backing.MappingSource)
			if isDA != c.directIO || isMS != c.directIO {
				t.Errorf("%s: DirectAccesser %v, MappingSource %v; want both %v", path, isDA, isMS, c.directIO)
			}
			if isMS && ms.PageSize() != pageSize {
				t.Errorf("%s: PageSize %d, want %d", path, ms.PageSize(), pageSize)
			}
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil {
				t.Fatal(err)
			}
			want := backing.ID{Dev: st.Dev, Ino: st.Ino}
			if c.kind == backing.KindBlock {
				want = backing.ID{Dev: st.Rdev}
			}
			if dev.ID() != want {
				t.Errorf("%s: ID %+v, want %+v", path, dev.ID(), want)
			}
		})
	}
}
