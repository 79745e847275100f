package backing

import (
	"testing"

	"pgregory.net/rapid"
)

// Ensure that splitAligned covers the range exactly, in order, with a
// middle of whole aligned units and edges shorter than a unit.
func TestSplitAligned(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		align := int64(1) << rapid.IntRange(0, 21).Draw(t, "log2 align")
		off := rapid.Int64Range(0, 1<<40).Draw(t, "off")
		n := rapid.Int64Range(0, 1<<32).Draw(t, "n")
		h, in, tl := splitAligned(off, n, align)
		if h.off != off || h.off+h.n != in.off && in.n > 0 || h.n+in.n+tl.n != n {
			t.Fatalf("split(%d, %d, %d) = %v %v %v: does not cover the range in order", off, n, align, h, in, tl)
		}
		if in.n > 0 && (in.off%align != 0 || in.n%align != 0 || h.n >= align || tl.n >= align || tl.off != in.off+in.n) {
			t.Fatalf("split(%d, %d, %d) = %v %v %v: middle unaligned or an edge holds a whole unit", off, n, align, h, in, tl)
		}
		if in.n == 0 && tl.n != 0 {
			t.Fatalf("split(%d, %d, %d) = %v %v %v: a tail without a middle", off, n, align, h, in, tl)
		}
		if lo := (off + align - 1) / align * align; in.n == 0 && lo+align <= off+n {
			t.Fatalf("split(%d, %d, %d): missed the whole unit at %d", off, n, align, lo)
		}
	})
}
