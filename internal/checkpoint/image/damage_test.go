package image_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
)

// Ensure that a damaged, truncated or foreign journal is refused with
// ErrCorrupt and an error that says what is wrong, and that the refusal
// leaves the image exactly as it was: checkpoint 1 whole, never a part
// of the committed checkpoint 2 (its first segment is good, its second
// is not).
func TestOpenDamaged(t *testing.T) {
	jnl, img := pendingJournal(t)
	seg2 := int64(image.DataStart + image.DescSize + fuzzChunk)
	for _, c := range []struct {
		name    string
		damage  func(j []byte) []byte
		fix     bool
		problem string
	}{
		{"second segment's data", func(j []byte) []byte { j[seg2+image.DescSize+10] ^= 1; return j }, false,
			"chunk 3 (entry 0) has checksum"},
		{"second segment's descriptor", func(j []byte) []byte { j[seg2+40] ^= 1; return j }, false,
			"segment descriptor checksum"},
		{"chunk outside the image", func(j []byte) []byte {
			binary.LittleEndian.PutUint64(j[seg2+64:], 1000)
			return j
		}, true, "names chunk 1000, outside the image's 5 chunks"},
		{"truncated", func(j []byte) []byte { return j[:seg2+100] }, false, "truncated"},
		{"both header slots", func(j []byte) []byte { j[20] ^= 1; j[image.SlotSize+20] ^= 1; return j }, false,
			"both header slots are bad"},
		{"not a journal", func(j []byte) []byte { return bytes.Repeat([]byte{7}, len(j)) }, false,
			"not a checkpoint journal"},
		{"header size larger than the image", func(j []byte) []byte {
			for s := range 2 {
				binary.LittleEndian.PutUint64(j[s*image.SlotSize+24:], 1<<30)
			}
			return j
		}, true, "journal describes 1073741824"},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := c.damage(bytes.Clone(jnl))
			if c.fix {
				image.FixChecksums(j)
			}
			jd := storetest.NewCrashDev("jnl", int64(len(j)))
			jd.SetContents(j)
			id := img.CrashClone(nil)
			before := make([]byte, id.Size())
			id.ReadAt(before, 0)
			_, err := image.OpenOn(id, jd, image.Options{})
			if !errors.Is(err, image.ErrCorrupt) || !strings.Contains(err.Error(), c.problem) {
				t.Fatalf("Open: %v, want ErrCorrupt saying %q", err, c.problem)
			}
			rep, ierr := image.InspectOn(id, jd, nil)
			if ierr == nil || rep.Problem != ierr.Error() {
				t.Errorf("Inspect: %v, report problem %q: want the same error", ierr, rep.Problem)
			}
			after := make([]byte, id.Size())
			id.ReadAt(after, 0)
			if !bytes.Equal(before, after) {
				t.Fatal("the refused Open changed the image")
			}
		})
	}
}
