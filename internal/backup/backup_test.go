package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backup/s3test"
	"github.com/minio/minio-go/v7"
)

func TestMain(m *testing.M) {
	code := m.Run()
	s3test.Stop()
	os.Exit(code)
}

// memVolume is a volume in memory.
type memVolume struct {
	b     []byte
	reads int64 // bytes read
	fail  int   // reads that succeed before ReadAt fails (<0: never)
	wfail int   // writes that succeed before WriteAt fails (<0: never)
}

func (v *memVolume) Size() int64 { return int64(len(v.b)) }
func (v *memVolume) ReadAt(p []byte, off int64) error {
	if v.fail == 0 {
		return errors.New("injected read failure")
	}
	v.fail--
	v.reads += int64(len(p))
	copy(p, v.b[off:])
	return nil
}
func (v *memVolume) WriteAt(p []byte, off int64) error {
	if v.wfail == 0 {
		return errors.New("injected write failure")
	}
	v.wfail--
	copy(v.b[off:], p)
	return nil
}
func (v *memVolume) Flush() error { return nil }

func newVolume(size int) *memVolume { return &memVolume{b: make([]byte, size), fail: -1, wfail: -1} }

// randomVolume is a volume of size random bytes, the same for a seed.
func randomVolume(size int, seed uint64) *memVolume {
	v := newVolume(size)
	fill(rand.New(rand.NewPCG(seed, seed+1)), v.b)
	return v
}

// fill writes random bytes into p.
func fill(r *rand.Rand, p []byte) {
	for i := range p {
		p[i] = byte(r.Uint32())
	}
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

// openStore connects to a fresh bucket of the test S3 server.
func openStore(t *testing.T, prefix string) (*Store, *s3test.Server) {
	t.Helper()
	srv := s3test.Shared(t)
	s, err := Open(Location{Bucket: srv.Bucket, Prefix: prefix}, Config{Endpoint: srv.Endpoint, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Setenv(t)
	return s, srv
}

// scribble writes n random runs into v (some of them zeros, some the
// same bytes twice) and returns the ranges written.
func scribble(r *rand.Rand, v *memVolume, n int) []Range {
	var out []Range
	for range n {
		ln := int64(1+r.IntN(64)) * 4096
		if r.IntN(8) == 0 {
			ln = int64(1+r.IntN(3)) * ObjectSize
		}
		off := r.Int64N(int64(len(v.b))-ln) &^ 4095
		p := v.b[off : off+ln]
		switch r.IntN(4) {
		case 0:
			clear(p)
		default:
			fill(r, p)
		}
		out = append(out, Range{off, ln})
	}
	return out
}

// Ensure that a full backup and 10 increments built from the changed
// ranges alone restore byte-identical, every generation, and that each
// increment reads exactly the changed bytes and sends no more.
func TestBackup_roundTrip10Generations(t *testing.T) {
	s, _ := openStore(t, "vols/a")
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	v := newVolume(24<<20 + 12345) // not a multiple of the object size
	scribble(r, v, 40)
	want := map[string][32]byte{}
	res, err := s.Backup(ctx, Request{Name: "g00", Origin: "vol", Source: v})
	if err != nil {
		t.Fatal(err)
	}
	if res.Read != int64(len(v.b)) {
		t.Fatalf("full backup read %d bytes, want %d", res.Read, len(v.b))
	}
	want["g00"] = sum(v.b)
	for g := 1; g <= 10; g++ {
		name, prev := fmt.Sprintf("g%02d", g), fmt.Sprintf("g%02d", g-1)
		changed := scribble(r, v, 1+r.IntN(20))
		norm, err := normalize(changed, int64(len(v.b)))
		if err != nil {
			t.Fatal(err)
		}
		var changedBytes int64
		for _, c := range norm {
			changedBytes += c.Len
		}
		v.reads = 0
		res, err := s.Backup(ctx, Request{Name: name, Origin: "vol", Source: v, Since: prev, Changed: changed})
		if err != nil {
			t.Fatalf("generation %d: %v", g, err)
		}
		if v.reads != changedBytes || res.Read != changedBytes || res.Sent > changedBytes {
			t.Fatalf("generation %d: read %d (reported %d), sent %d; changed %d", g, v.reads, res.Read, res.Sent, changedBytes)
		}
		if res.Manifest.Parent != prev || res.Manifest.Changed != changedBytes {
			t.Fatalf("generation %d: manifest parent %q changed %d, want %q %d", g, res.Manifest.Parent, res.Manifest.Changed, prev, changedBytes)
		}
		want[name] = sum(v.b)
	}
	for name, w := range want {
		dst := newVolume(len(v.b))
		for i := range dst.b {
			dst.b[i] = 0xa5 // zeros must be written, not assumed
		}
		if _, err := s.Restore(ctx, RestoreRequest{Name: name, Target: dst}); err != nil {
			t.Fatalf("restore %s: %v", name, err)
		}
		if sum(dst.b) != w {
			t.Errorf("restore %s: SHA-256 differs from the snapshot's", name)
		}
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 11 {
		t.Fatalf("list: %d entries, %v; want 11", len(list), err)
	}
	for _, e := range list {
		if e.Err != nil {
			t.Errorf("list %s: %v", e.Name, e.Err)
		}
	}
}

// Ensure that an interrupted backup leaves no manifest, and that the next
// run sends only the objects the first did not, with an exact result.
func TestBackup_resumeSendsOnlyMissing(t *testing.T) {
	s, _ := openStore(t, "")
	ctx := context.Background()
	v := randomVolume(20<<20, 3)
	v.fail = 6
	if _, err := s.Backup(ctx, Request{Name: "s1", Source: v, Workers: 1}); err == nil || !strings.Contains(err.Error(), "run it again") {
		t.Fatalf("interrupted backup: %v, want an error saying to run it again", err)
	}
	if _, _, err := s.Manifest(ctx, "s1"); err == nil {
		t.Fatal("an interrupted backup left a manifest")
	}
	v.fail = -1
	res, err := s.Backup(ctx, Request{Name: "s1", Source: v})
	if err != nil {
		t.Fatal(err)
	}
	if res.Objects != 10 || res.Uploaded != 4 {
		t.Fatalf("second run: %d objects, uploaded %d; want 10 and 4 (6 were sent before the failure)", res.Objects, res.Uploaded)
	}
	dst := newVolume(len(v.b))
	if _, err := s.Restore(ctx, RestoreRequest{Name: "s1", Target: dst}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.b, v.b) {
		t.Fatal("restore differs")
	}
}

// Ensure that a restore cut short resumes: with Resume, the objects the
// target already holds (here those written before a write failed) are
// neither downloaded nor written again, one whose bytes on the target
// were changed since is, and the result is exact.
func TestRestore_resumeDownloadsOnlyMissing(t *testing.T) {
	s, _ := openStore(t, "resume")
	ctx := context.Background()
	v := randomVolume(20<<20, 4)
	if _, err := s.Backup(ctx, Request{Name: "s1", Source: v}); err != nil {
		t.Fatal(err)
	}
	dst := newVolume(len(v.b))
	dst.wfail = 4
	if _, err := s.Restore(ctx, RestoreRequest{Name: "s1", Target: dst, Workers: 1}); err == nil || !strings.Contains(err.Error(), "run the restore again") {
		t.Fatalf("restore with a failing target: %v, want an error saying to run it again", err)
	}
	dst.wfail = -1
	dst.b[0] ^= 1 // the first object, written, then changed on the target
	res, err := s.Restore(ctx, RestoreRequest{Name: "s1", Target: dst, Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.b, v.b) {
		t.Fatal("the resumed restore differs from the volume backed up")
	}
	if res.Objects != 10 || res.Present != 3 || res.Sent != 2*7*ObjectSize {
		t.Fatalf("resumed restore: %d objects, %d present, %d bytes downloaded; want 10, 3 (4 written before the failure, one changed since) and both passes of the 7 others (%d)",
			res.Objects, res.Present, res.Sent, 2*7*ObjectSize)
	}
	again, err := s.Restore(ctx, RestoreRequest{Name: "s1", Target: dst, Resume: true})
	if err != nil || again.Present != 10 || again.Sent != 0 {
		t.Fatalf("resume of a finished restore: %+v, %v; want every object present, nothing downloaded", again, err)
	}
}

// Ensure that --since never silently turns into a full backup or a short
// one: a missing parent, a parent of another size or origin, and changed
// ranges outside the volume are refused.
func TestBackup_incrementalRefusals(t *testing.T) {
	s, _ := openStore(t, "p")
	ctx := context.Background()
	v := newVolume(4 << 20)
	v.b[5] = 1
	if _, err := s.Backup(ctx, Request{Name: "a", Origin: "vol", Source: v}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		req  Request
		want string
	}{
		{Request{Name: "b", Origin: "vol", Source: v, Since: "nope", Changed: []Range{}}, `no backup of snapshot "nope"`},
		{Request{Name: "b", Origin: "other", Source: v, Since: "a", Changed: []Range{}}, "one origin"},
		{Request{Name: "b", Origin: "vol", Source: newVolume(8 << 20), Since: "a", Changed: []Range{}}, "same size"},
		{Request{Name: "b", Origin: "vol", Source: v, Since: "a", Changed: []Range{{4<<20 - 10, 20}}}, "outside"},
		{Request{Name: "a", Origin: "vol", Source: v}, "already has a backup"},
		{Request{Name: "../x", Source: v}, "cannot name a backup"},
	}
	for _, c := range cases {
		if _, err := s.Backup(ctx, c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("backup %s since %q: %v, want an error containing %q", c.req.Name, c.req.Since, err, c.want)
		}
	}
	if _, _, err := s.Manifest(ctx, "b"); err == nil {
		t.Fatal("a refused backup left a manifest")
	}
}

// Ensure that corrupt, truncated, replaced and replayed manifests and
// objects are refused with a clear error before the target is touched,
// and that a too small target is refused.
func TestRestore_refusesBadBackups(t *testing.T) {
	s, srv := openStore(t, "bad")
	ctx := context.Background()
	v := randomVolume(6<<20, 5)
	for _, name := range []string{"s1", "s2"} {
		if _, err := s.Backup(ctx, Request{Name: name, Source: v}); err != nil {
			t.Fatal(err)
		}
		v.b[0]++
	}
	m, _, err := s.Manifest(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	raw := func(rel string) []byte {
		t.Helper()
		b, err := s.get(ctx, rel, maxManifest)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	put := func(rel string, b []byte) {
		t.Helper()
		if _, err := srv.Client.PutObject(ctx, srv.Bucket, "bad/"+rel, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	man1, man2 := raw(manifestKey("s1")), raw(manifestKey("s2"))
	obj := objectKey(m.Extents[1].Object)
	good := raw(obj)
	flipped := bytes.Clone(good)
	flipped[100] ^= 1
	edited := bytes.Replace(man1, []byte(`"size": 6291456`), []byte(`"size": 4194304`), 1)
	if bytes.Equal(edited, man1) {
		t.Fatal("test broken: the manifest has no size field to edit")
	}
	cases := []struct {
		what, rel string
		data      []byte
		restore   string
		want      string
	}{
		{"flipped bit in an object", obj, flipped, "s1", "corrupt or was replaced"},
		{"truncated object", obj, good[:1000], "s1", "truncated or corrupt"},
		{"object replaced by another", obj, raw(objectKey(m.Extents[0].Object)), "s1", "corrupt or was replaced"},
		{"truncated manifest", manifestKey("s1"), man1[:len(man1)/2], "s1", "truncated or corrupt"},
		{"edited manifest", manifestKey("s1"), edited, "s1", "checksum mismatch"},
		{"replayed manifest", manifestKey("s2"), man1, "s2", "replayed"},
	}
	for _, c := range cases {
		put(c.rel, c.data)
		dst := newVolume(len(v.b))
		dst.b[7] = 7
		before := sum(dst.b)
		_, err := s.Restore(ctx, RestoreRequest{Name: c.restore, Target: dst})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: restore: %v, want an error containing %q", c.what, err, c.want)
		}
		if sum(dst.b) != before {
			t.Errorf("%s: the target changed", c.what)
		}
		put(obj, good)
		put(manifestKey("s1"), man1)
		put(manifestKey("s2"), man2)
	}
	if err := srv.Client.RemoveObject(ctx, srv.Bucket, "bad/"+obj, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	dst := newVolume(len(v.b))
	if _, err := s.Restore(ctx, RestoreRequest{Name: "s1", Target: dst}); err == nil || !strings.Contains(err.Error(), "unchanged") || !bytes.Equal(dst.b, make([]byte, len(v.b))) {
		t.Errorf("missing object: restore %v, want refused with the target unchanged", err)
	}
	put(obj, good)
	if _, err := s.Restore(ctx, RestoreRequest{Name: "s1", Target: newVolume(len(v.b) - 1)}); err == nil || !strings.Contains(err.Error(), "at least that large") {
		t.Errorf("too small target: %v", err)
	}
	if _, err := s.Restore(ctx, RestoreRequest{Name: "s1", Target: newVolume(len(v.b))}); err != nil {
		t.Errorf("the repaired backup does not restore: %v", err)
	}
}
