package kerneltest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/exstore/persistent"
)

// pattern returns n bytes of a deterministic pseudo-random stream for seed,
// starting at byte off: every 8-byte word depends on seed and its offset,
// so any two regions of any two seeds differ.
func pattern(seed uint64, off int64, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		x := seed*0x9e3779b97f4a7c15 + uint64(off+int64(i))/8 + 1
		x ^= x >> 30
		x *= 0xbf58476d1ce4e5b9
		x ^= x >> 27
		x *= 0x94d049bb133111eb
		x ^= x >> 31
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], x)
		copy(b[i:], w[:])
	}
	return b
}

// writeImage writes data to a new file in dir; a nil data makes a sparse
// zeroed file of size bytes.
func writeImage(t *testing.T, dir, name string, data []byte, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if data != nil {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func readImage(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// write is one guest write: copy [Off, Off+Len) of the data disk to the
// same range of Dev.
type write struct {
	Dev      string // guest device, e.g. /dev/mapper/orig
	Off, Len int64  // bytes, multiples of 512
}

// ddLine is the guest command for w, reading from the data disk src, with
// the largest power-of-two block size (up to 1 MiB) that divides both.
func (w write) ddLine(src string) string {
	bs := int64(1 << 20)
	for w.Off%bs != 0 || w.Len%bs != 0 {
		bs /= 2
	}
	return fmt.Sprintf("dd if=%s of=%s bs=%d skip=%d seek=%d count=%d oflag=direct conv=notrunc 2>/tmp/dd.err || { cat /tmp/dd.err; exit 1; }",
		src, w.Dev, bs, w.Off/bs, w.Off/bs, w.Len/bs)
}

// apply makes the host model of dst see w.
func (w write) apply(dst, data []byte) { copy(dst[w.Off:w.Off+w.Len], data[w.Off:w.Off+w.Len]) }

// chunksOf lists the chunks (of chunk bytes) that [off, off+n) touches.
func chunksOf(off, n, chunk int64) []exstore.Chunk {
	var cs []exstore.Chunk
	for c := off / chunk; c*chunk < off+n; c++ {
		cs = append(cs, exstore.Chunk(c))
	}
	return cs
}

// openStore opens the persistent exception store on the COW image and
// loads it, returning the exceptions in load order.
func openStore(t *testing.T, cowPath string, table exstore.Sector) (*persistent.Store, backing.Device, []exstore.Exception) {
	t.Helper()
	dev, err := backing.Open(cowPath, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	s, err := persistent.Open(dev, persistent.Options{ChunkSize: table, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var es []exstore.Exception
	if err := s.Load(func(e exstore.Exception) error { es = append(es, e); return nil }); err != nil {
		t.Fatalf("load %s: %v", cowPath, err)
	}
	return s, dev, es
}

// snapshotView is the snapshot as daxsnap serves it from a loaded store:
// the origin, with every excepted chunk read from the COW device.
func snapshotView(t *testing.T, origin []byte, cow backing.Device, chunk exstore.Sector, es []exstore.Exception) []byte {
	t.Helper()
	view := bytes.Clone(origin)
	cb := chunk.Bytes()
	for _, e := range es {
		if int64(e.Old+1)*cb > int64(len(view)) {
			t.Fatalf("exception %v: origin chunk beyond the %d-byte origin", e, len(view))
		}
		if _, err := cow.ReadAt(view[int64(e.Old)*cb:int64(e.Old+1)*cb], int64(e.New)*cb); err != nil {
			t.Fatalf("read COW chunk %d: %v", e.New, err)
		}
	}
	return view
}

// usageLine formats a store's usage the way the kernel's snapshot status
// prints it.
func usageLine(s exstore.Store) string {
	a, tot, m := s.Usage()
	return fmt.Sprintf("%d/%d %d", a, tot, m)
}

// field returns the text after "key: " on the output line that starts
// with it, failing the test if there is none.
func field(t *testing.T, out, key string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, key+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("guest output has no %q line:\n%s", key, out)
	return ""
}

var statusRE = regexp.MustCompile(`^0 (\d+) snapshot (\d+)/(\d+) (\d+)$`)

// snapshotUsage parses "0 LEN snapshot A/T M" from dmsetup status into
// "A/T M", failing on anything else (Invalid, Overflow...).
func snapshotUsage(t *testing.T, status string) string {
	t.Helper()
	m := statusRE.FindStringSubmatch(status)
	if m == nil {
		t.Fatalf("snapshot status %q is not \"0 LEN snapshot ALLOC/TOTAL META\"", status)
	}
	return m[2] + "/" + m[3] + " " + m[4]
}

// sortedOlds returns the origin chunks of es, sorted, and fails on a
// chunk excepted twice or two exceptions sharing a COW chunk.
func sortedOlds(t *testing.T, es []exstore.Exception) []exstore.Chunk {
	t.Helper()
	olds := make([]exstore.Chunk, 0, len(es))
	seenOld, seenNew := map[exstore.Chunk]bool{}, map[exstore.Chunk]bool{}
	for _, e := range es {
		if seenOld[e.Old] || seenNew[e.New] {
			t.Errorf("exception %v repeats an origin or COW chunk", e)
		}
		seenOld[e.Old], seenNew[e.New] = true, true
		olds = append(olds, e.Old)
	}
	sort.Slice(olds, func(i, j int) bool { return olds[i] < olds[j] })
	return olds
}

func chunkSet(cs ...[]exstore.Chunk) []exstore.Chunk {
	m := map[exstore.Chunk]bool{}
	for _, l := range cs {
		for _, c := range l {
			m[c] = true
		}
	}
	out := make([]exstore.Chunk, 0, len(m))
	for c := range m {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func fmtChunks(cs []exstore.Chunk) string {
	var b strings.Builder
	for i, c := range cs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(c), 10))
	}
	return b.String()
}
