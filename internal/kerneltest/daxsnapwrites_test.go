package kerneltest

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/persistent"
)

// cowCase is one origin + COW pair daxsnap prepares for the kernel.
type cowCase struct {
	name        string
	chunk       exstore.Sector // on disk
	tableChunk  exstore.Sector // in the kernel's table line
	originBytes int64
	cowBytes    int64
	excepted    []exstore.Chunk // origin chunks daxsnap copies out, in order
	workers     int             // concurrent Prepare/copy/Commit loops
	// kernelWrites are origin chunks the guest then zeroes through
	// snapshot-origin: the kernel appends its own exceptions to the store
	// daxsnap wrote.
	kernelWrites []exstore.Chunk

	original, origin []byte // the origin at snapshot time, and after the writes
	originPath       string
	cowPath          string
	usage            string // daxsnap's usage line after writing the store
}

func span(from, to, step int) []exstore.Chunk {
	var cs []exstore.Chunk
	for c := from; c <= to; c += step {
		cs = append(cs, exstore.Chunk(c))
	}
	return cs
}

// prepare builds the case's images the way daxsnap's snapshot-origin
// would: for each chunk, reserve a COW chunk, copy the original data there,
// commit the exception, and only then overwrite the origin chunk.
func (c *cowCase) prepare(t *testing.T, dir string, seed uint64) {
	t.Helper()
	cb := c.chunk.Bytes()
	c.original = pattern(seed, 0, int(c.originBytes))
	c.origin = bytes.Clone(c.original)
	c.originPath = writeImage(t, dir, c.name+"-origin.img", c.original, 0)
	c.cowPath = writeImage(t, dir, c.name+"-cow.img", nil, c.cowBytes)
	originDev, err := backing.Open(c.originPath, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer originDev.Close()
	cowDev, err := backing.Open(c.cowPath, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cowDev.Close()
	s, err := persistent.Open(cowDev, persistent.Options{ChunkSize: c.chunk})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(func(e exstore.Exception) error { return fmt.Errorf("fresh store has exception %v", e) }); err != nil {
		t.Fatal(err)
	}
	newData := pattern(seed+100, 0, int(c.originBytes))
	work := make(chan exstore.Chunk)
	errs := make(chan error, len(c.excepted))
	var wg sync.WaitGroup
	for range max(c.workers, 1) {
		wg.Go(func() {
			for old := range work {
				errs <- func() error {
					n, err := s.Prepare()
					if err != nil {
						return err
					}
					off := int64(old) * cb
					if _, err := cowDev.WriteAt(c.original[off:off+cb], int64(n)*cb); err != nil {
						return err
					}
					if err := s.Commit(exstore.Exception{Old: old, New: n}); err != nil {
						return err
					}
					// The origin write the copy-out was for.
					_, err = originDev.WriteAt(newData[off:off+cb], off)
					return err
				}()
			}
		})
	}
	for _, old := range c.excepted {
		work <- old
		off := int64(old) * cb
		copy(c.origin[off:off+cb], newData[off:off+cb])
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	c.usage = usageLine(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := originDev.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readImage(t, c.originPath); !bytes.Equal(got, c.origin) {
		t.Fatalf("%s: origin image differs from the model", c.name)
	}
}

// TestKernelReadsDaxsnapWrites: daxsnap's persistent store writes COW
// devices; the kernel's dm-snapshot activates them and must read exactly
// the snapshot daxsnap serves (the origin at snapshot time), report the
// usage daxsnap reports, and be able to append exceptions that daxsnap then
// loads. Three stores in one boot: a few exceptions, more than three
// metadata areas' worth written by concurrent committers, and 64 KiB chunks
// with a table that asks for 4 KiB (the header's chunk size wins).
func TestKernelReadsDaxsnapWrites(t *testing.T) {
	k := Require(t)
	dir := t.TempDir()
	cases := []*cowCase{
		{
			name: "small", chunk: 8, tableChunk: 8, originBytes: 4 << 20, cowBytes: 1 << 20,
			excepted:     append(append([]exstore.Chunk{0, 3, 17}, span(100, 119, 1)...), 1023),
			kernelWrites: []exstore.Chunk{3, 500, 501, 900},
		},
		{
			name: "areas", chunk: 8, tableChunk: 8, originBytes: 8 << 20, cowBytes: 4 << 20,
			excepted: span(0, 1797, 3), workers: 16, // 600 exceptions: areas 0 and 1 full, area 2 current
		},
		{
			name: "chunk64k", chunk: 128, tableChunk: 8, originBytes: 8 << 20, cowBytes: 4 << 20,
			excepted: append(append([]exstore.Chunk{0, 1, 2, 50}, span(64, 90, 1)...), 127),
		},
	}
	var disks []string
	var script strings.Builder
	script.WriteString("set -e\n")
	for i, c := range cases {
		c.prepare(t, dir, uint64(10+i))
		disks = append(disks, c.originPath, c.cowPath)
		o, w := "/dev/vd"+string(rune('a'+2*i)), "/dev/vd"+string(rune('b'+2*i))
		fmt.Fprintf(&script, `dmsetup create %[1]s --table "0 %[2]d snapshot %[3]s %[4]s P %[5]d"
echo "%[1]s status: $(dmsetup status %[1]s)"
echo "%[1]s table: $(dmsetup table %[1]s | cut -d' ' -f1-3,6-)"
echo "%[1]s sha256: $(sha256sum </dev/mapper/%[1]s | cut -d' ' -f1)"
echo "%[1]s origin sha256: $(sha256sum <%[3]s | cut -d' ' -f1)"
`, c.name, c.originBytes/512, o, w, c.tableChunk)
		if len(c.kernelWrites) > 0 {
			fmt.Fprintf(&script, "dmsetup create %s-orig --table \"0 %d snapshot-origin %s\"\n", c.name, c.originBytes/512, o)
			for _, ch := range c.kernelWrites {
				fmt.Fprintf(&script, "dd if=/dev/zero of=/dev/mapper/%s-orig bs=%d seek=%d count=1 oflag=direct conv=notrunc 2>/tmp/dd.err || { cat /tmp/dd.err; exit 1; }\n",
					c.name, c.chunk.Bytes(), ch)
			}
			fmt.Fprintf(&script, `sync
echo "%[1]s status after: $(dmsetup status %[1]s)"
echo "%[1]s sha256 after: $(sha256sum </dev/mapper/%[1]s | cut -d' ' -f1)"
dmsetup remove %[1]s-orig
`, c.name)
		}
		fmt.Fprintf(&script, "dmsetup remove %s\n", c.name)
	}
	script.WriteString("dmesg | grep device-mapper | sed 's/^\\[[^]]*\\] /dmesg: /'\necho done\n")

	r := Boot(t, k, Options{Disks: disks, Script: script.String()})
	t.Logf("guest output:\n%s", r.Output)
	if r.ExitCode != 0 || !strings.Contains(r.Output, "done\n") {
		t.Fatalf("guest script failed (exit %d)", r.ExitCode)
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cb := c.chunk.Bytes()
			if got, want := field(t, r.Output, c.name+" origin sha256"), sha(c.origin); got != want {
				t.Fatalf("the guest's origin disk has sha256 %s, want %s: it is not the image the test wrote", got, want)
			}
			if got, want := field(t, r.Output, c.name+" sha256"), sha(c.original); got != want {
				t.Errorf("the kernel reads the snapshot as sha256 %s, want the origin at snapshot time, %s", got, want)
			}
			if got := snapshotUsage(t, field(t, r.Output, c.name+" status")); got != c.usage {
				t.Errorf("kernel status %q, daxsnap's usage after writing %q", got, c.usage)
			}
			if got, want := field(t, r.Output, c.name+" table"), fmt.Sprintf("0 %d snapshot P %d", c.originBytes/512, c.chunk); got != want {
				t.Errorf("kernel table %q, want %q (the chunk size on disk)", got, want)
			}
			if c.tableChunk != c.chunk {
				want := fmt.Sprintf("chunk size %d in device metadata overrides table chunk size of %d", c.chunk, c.tableChunk)
				if !strings.Contains(r.Output, want) {
					t.Errorf("dmesg lacks %q", want)
				}
			}

			// What daxsnap serves from its own store, before the kernel's
			// writes, is what the kernel read; and after them, daxsnap loads
			// the kernel's additions.
			s, cow, es := openStore(t, c.cowPath, c.tableChunk)
			olds := sortedOlds(t, es)
			if want := chunkSet(c.excepted, c.kernelWrites); !slices.Equal(olds, want) {
				t.Errorf("daxsnap loads origin chunks %s\nwant %s", fmtChunks(olds), fmtChunks(want))
			}
			if got := snapshotView(t, readImage(t, c.originPath), cow, s.ChunkSize(), es); !bytes.Equal(got, c.original) {
				t.Errorf("daxsnap's snapshot view (sha256 %s) is not the origin at snapshot time", sha(got))
			}
			buf := make([]byte, cb)
			for _, e := range es {
				if _, err := cow.ReadAt(buf, int64(e.New)*cb); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf, c.original[int64(e.Old)*cb:int64(e.Old+1)*cb]) {
					t.Errorf("exception %v: COW chunk does not hold origin chunk %d as it was at snapshot time", e, e.Old)
				}
			}
			if len(c.kernelWrites) > 0 {
				if got, want := field(t, r.Output, c.name+" sha256 after"), sha(c.original); got != want {
					t.Errorf("after the kernel's origin writes, the kernel reads the snapshot as %s, want %s", got, want)
				}
				if got, want := usageLine(s), snapshotUsage(t, field(t, r.Output, c.name+" status after")); got != want {
					t.Errorf("daxsnap usage %q after loading the kernel's additions, kernel status %q", got, want)
				}
			} else if got := usageLine(s); got != c.usage {
				t.Errorf("daxsnap usage after reload %q, after writing %q", got, c.usage)
			}
			rep, err := persistent.Inspect(cow)
			if err != nil {
				t.Fatal(err)
			}
			if c.name == "areas" && (len(rep.Areas) != 3 || !rep.Areas[1].Full) {
				t.Errorf("areas %+v: want 3 areas, 0 and 1 full", rep.Areas)
			}
		})
	}
}
