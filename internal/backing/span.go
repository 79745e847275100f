package backing

import "io"

// span is a byte range [off, off+n).
type span struct{ off, n int64 }

// splitAligned cuts [off, off+n) into an unaligned head, a middle made of
// whole align-sized units, and an unaligned tail, for operations that only
// work on whole pages or blocks (punch hole, BLKZEROOUT). When the range
// holds no whole unit, everything is in head.
func splitAligned(off, n, align int64) (head, inner, tail span) {
	end := off + n
	lo := (off + align - 1) / align * align
	hi := end / align * align
	if lo >= hi {
		return span{off, n}, span{}, span{}
	}
	return span{off, lo - off}, span{lo, hi - lo}, span{hi, end - hi}
}

// zeroes is a shared source for writing zeroes; it is only ever read.
var zeroes [64 << 10]byte

// writeZeroes writes n zero bytes at off through w, for media that cannot
// zero a range any other way.
func writeZeroes(w io.WriterAt, off, n int64) error {
	for n > 0 {
		chunk := min(n, int64(len(zeroes)))
		if _, err := w.WriteAt(zeroes[:chunk], off); err != nil {
			return err
		}
		off, n = off+chunk, n-chunk
	}
	return nil
}
