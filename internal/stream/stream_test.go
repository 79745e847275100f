package stream

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/daxsnap/daxsnap/internal/testutil"
)

// sample writes a stream of h with a few records and returns it with
// the image it describes applied on base.
func sample(t testing.TB, h Header, v1 bool, seed uint64, base []byte) ([]byte, []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	img := append([]byte(nil), base...)
	var out bytes.Buffer
	w, err := NewWriter(&out, h, v1)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(0)
	for off < h.Size {
		off += int64(rng.IntN(4)) * 512
		n := min(int64(1+rng.IntN(8))*512, h.Size-off)
		if n <= 0 {
			break
		}
		if rng.IntN(3) == 0 {
			if err := w.Zero(off, n); err != nil {
				t.Fatal(err)
			}
			clear(img[off : off+n])
		} else {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if err := w.Write(off, p); err != nil {
				t.Fatal(err)
			}
			copy(img[off:], p)
		}
		off += n
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Written() != int64(out.Len()) {
		t.Fatalf("Written %d, wrote %d", w.Written(), out.Len())
	}
	return out.Bytes(), img
}

// apply reads a stream onto a copy of base.
func apply(s, base []byte) (Header, []byte, error) {
	r, err := NewReader(bytes.NewReader(s))
	if err != nil {
		return Header{}, nil, err
	}
	img := append([]byte(nil), base...)
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return r.Header(), img, nil
		}
		if err != nil {
			return r.Header(), nil, err
		}
		if rec.Zero {
			clear(img[rec.Off : rec.Off+rec.Len])
		} else {
			copy(img[rec.Off:], rec.Data)
		}
	}
}

// Ensure that what a Writer writes a Reader reads back: header, records
// and the image they make.
func TestStream_roundTrip(t *testing.T) {
	for seed := range uint64(20) {
		h := Header{From: "s1", To: "s2", Size: 64 << 10}
		if seed%2 == 0 {
			h.From = ""
		}
		base := bytes.Repeat([]byte{0xAA}, int(h.Size))
		s, want := sample(t, h, false, seed, base)
		got, img, err := apply(s, base)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if got != h || !bytes.Equal(img, want) {
			t.Fatalf("seed %d: header %+v (want %+v), image equal %v", seed, got, h, bytes.Equal(img, want))
		}
	}
}

// Ensure that Length predicts the length of a stream, which the Reader
// then holds it to.
func TestStream_length(t *testing.T) {
	h := Header{From: "a", To: "bb", Size: 1 << 20}
	s, _ := sample(t, h, false, 7, make([]byte, h.Size))
	r, _ := NewReader(bytes.NewReader(s))
	var writes []int64
	zeros := 0
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if rec.Zero {
			zeros++
		} else {
			writes = append(writes, rec.Len)
		}
	}
	if n := Length(h, writes, zeros); n != int64(len(s)) {
		t.Fatalf("Length %d, stream %d", n, len(s))
	}
	h.Length = int64(len(s))
	withLen, _ := sample(t, h, false, 7, make([]byte, h.Size))
	if _, _, err := Verify(bytes.NewReader(withLen)); err != nil {
		t.Fatalf("stream with its right length: %v", err)
	}
	h.Length++
	wrong, _ := sample(t, h, false, 7, make([]byte, h.Size))
	if _, _, err := Verify(bytes.NewReader(wrong)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("stream one byte shorter than its header says: %v, want ErrCorrupt", err)
	}
}

// Ensure that every truncation is refused as truncated, and every single
// flipped byte as corrupt or truncated (a flipped length may make the
// stream look short), never read as another stream.
func TestStream_damage(t *testing.T) {
	h := Header{From: "s1", To: "s2", Size: 8 << 10}
	s, _ := sample(t, h, false, 3, make([]byte, h.Size))
	for n := range len(s) {
		if _, _, err := Verify(bytes.NewReader(s[:n])); !errors.Is(err, ErrTruncated) {
			t.Fatalf("stream cut to %d of %d bytes: %v, want ErrTruncated", n, len(s), err)
		}
	}
	for i := range s {
		bad := append([]byte(nil), s...)
		bad[i] ^= 0x40
		if _, _, err := Verify(bytes.NewReader(bad)); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) {
			t.Fatalf("byte %d of %d flipped: %v, want ErrCorrupt or ErrTruncated", i, len(s), err)
		}
	}
	if _, _, err := Verify(bytes.NewReader(append(s, 0))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a byte after the end: %v, want ErrCorrupt", err)
	}
}

// Ensure that records out of order or past the image are refused by the
// Writer (a sender's bug) and, written by hand, by the Reader.
func TestStream_order(t *testing.T) {
	var out bytes.Buffer
	w, _ := NewWriter(&out, Header{To: "s", Size: 4096}, false)
	if err := w.Write(1024, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]int64{{0, 512}, {1024, 512}, {4096 - 512, 1024}, {2048, 0}} {
		if err := w.Zero(bad[0], bad[1]); err == nil {
			t.Errorf("Writer took zero extent %d+%d after 1024+512 in a 4096-byte image", bad[0], bad[1])
		}
	}
	// By hand: two extents, the second before the first.
	s := []byte(BannerV2)
	s = rec(s, TagTo, name("s"))
	s = rec(s, TagSize, binary.LittleEndian.AppendUint64(nil, 4096))
	s = rec(s, TagHeader, header(0))
	s = rec(s, TagZero, ext(1024, 512))
	s = rec(s, TagZero, ext(0, 512))
	if _, _, err := Verify(bytes.NewReader(s)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("extents out of order: %v, want ErrCorrupt", err)
	}
}

func rec(s []byte, tag byte, p []byte) []byte {
	s = append(s, tag)
	s = binary.LittleEndian.AppendUint64(s, uint64(len(p)))
	return append(s, p...)
}

func ext(off, n uint64) []byte {
	return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, off), n)
}

func header(length uint64) []byte {
	p := append([]byte(magic), make([]byte, 16)...)
	binary.LittleEndian.PutUint32(p[8:], Version)
	binary.LittleEndian.PutUint64(p[16:], length)
	return p
}

// Ensure that a record of a tag the Reader does not know is skipped, as
// rbd diff v2 says readers do, and still covered by the checksum; and
// that a plain rbd diff v2 without daxsnap's header is refused.
func TestStream_unknownTags(t *testing.T) {
	build := func(withHeader bool) []byte {
		s := []byte(BannerV2)
		s = rec(s, TagTo, name("s"))
		s = rec(s, 'p', []byte{1}) // Ceph's protection status
		s = rec(s, TagSize, binary.LittleEndian.AppendUint64(nil, 4096))
		if withHeader {
			s = rec(s, TagHeader, header(0))
		}
		s = rec(s, TagWrite, append(ext(0, 3*512), bytes.Repeat([]byte{7}, 3*512)...))
		s = rec(s, 'Q', []byte("future"))
		sum := binary.LittleEndian.AppendUint64(nil, 1)
		sum = binary.LittleEndian.AppendUint64(sum, 3*512)
		h := sha256Of(s)
		s = rec(s, TagSum, append(sum, h[:]...))
		return append(s, TagEnd)
	}
	hdr, sum, err := Verify(bytes.NewReader(build(true)))
	if err != nil || hdr.To != "s" || sum.Records != 1 || sum.DataBytes != 1536 {
		t.Fatalf("stream with unknown tags: %+v %+v %v", hdr, sum, err)
	}
	if _, _, err := Verify(bytes.NewReader(build(false))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("rbd diff v2 without daxsnap's header: %v, want ErrCorrupt", err)
	}
}

// Ensure that the v1 streams a Writer makes are what Ceph's own reader
// takes: `rbd merge-diff` (Debian's ceph-common; it reads only v1, and
// needs no cluster) merges a full and an incremental stream into the
// image both make.
func TestStream_rbdMergeDiff(t *testing.T) {
	testutil.RequireTool(t, "rbd") // Debian's ceph-common
	dir := t.TempDir()
	size := int64(64 << 10)
	full, img1 := sample(t, Header{To: "s1", Size: size}, true, 11, make([]byte, size))
	incr, img2 := sample(t, Header{From: "s1", To: "s2", Size: size}, true, 12, img1)
	write := func(name string, p []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, p, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	merged := filepath.Join(dir, "merged")
	cmd := exec.Command("rbd", "merge-diff", "--no-progress", write("full", full), write("incr", incr), merged)
	cmd.Env = append(os.Environ(), "CEPH_CONF=/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rbd merge-diff: %v\n%s", err, out)
	}
	m, err := os.ReadFile(merged)
	if err != nil {
		t.Fatal(err)
	}
	got, err := applyV1(m, size)
	if err != nil {
		t.Fatalf("rbd's merged diff: %v", err)
	}
	if !bytes.Equal(got, img2) {
		t.Fatal("the image rbd merge-diff's output makes is not the one the two streams make")
	}
}

// applyV1 reads a rbd diff v1 (as rbd writes it) onto zeroes: the test's
// own small reader, independent of the package's.
func applyV1(s []byte, size int64) ([]byte, error) {
	img := make([]byte, size)
	if !bytes.HasPrefix(s, []byte(BannerV1)) {
		return nil, errors.New("no v1 banner")
	}
	s = s[len(BannerV1):]
	u64 := func() uint64 { v := binary.LittleEndian.Uint64(s); s = s[8:]; return v }
	for len(s) > 0 {
		tag := s[0]
		s = s[1:]
		switch tag {
		case TagFrom, TagTo:
			n := binary.LittleEndian.Uint32(s)
			s = s[4+n:]
		case TagSize:
			u64()
		case TagWrite:
			off, n := u64(), u64()
			copy(img[off:], s[:n])
			s = s[n:]
		case TagZero:
			off, n := u64(), u64()
			clear(img[off : off+n])
		case TagEnd:
			if len(s) != 0 {
				return nil, errors.New("bytes after the end")
			}
			return img, nil
		default:
			return nil, errors.New("unknown tag " + string(tag))
		}
	}
	return nil, errors.New("no end record")
}

// FuzzReader feeds the Reader arbitrary streams: it never panics, and a
// stream it accepts has records in order, inside the image, whose counts
// agree with its summary.
func FuzzReader(f *testing.F) {
	full, _ := sample(f, Header{To: "s1", Size: 8192}, false, 1, make([]byte, 8192))
	incr, _ := sample(f, Header{From: "s1", To: "s2", Size: 8192, Length: 0}, false, 2, make([]byte, 8192))
	v1, _ := sample(f, Header{To: "s1", Size: 4096}, true, 3, make([]byte, 4096))
	for _, s := range [][]byte{full, incr, v1, full[:len(full)/2], []byte(BannerV2)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		r, err := NewReader(bytes.NewReader(s))
		if err != nil {
			return
		}
		h := r.Header()
		next, records := int64(0), uint64(0)
		for {
			rec, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
			records++
			if rec.Off < next || rec.Len <= 0 || rec.Off+rec.Len > h.Size || (!rec.Zero && int64(len(rec.Data)) != rec.Len) {
				t.Fatalf("accepted a bad record %+v (next %d, size %d)", rec, next, h.Size)
			}
			next = rec.Off + rec.Len
		}
		if sum := r.Summary(); sum.Records != records || sum.Length != int64(len(s)) {
			t.Fatalf("summary %+v of %d records, %d bytes", sum, records, len(s))
		}
	})
}

func sha256Of(p []byte) [32]byte { return sha256.Sum256(p) }
