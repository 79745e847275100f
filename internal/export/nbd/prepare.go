package nbd

import "github.com/daxsnap/daxsnap/internal/dm"

// Bursts of writes. A backend whose first write to a range pays for a
// step that many writes can share (a dm device with a snapshot-origin
// line: each first write after a snapshot copies its chunk out and
// commits the exception, two flushes and a metadata write) is a
// dm.WritesPreparer. Before the reader serves the first write of a
// burst it already holds in its buffer, it hands the backend the ranges
// of all of them at once, so their exceptions are committed together;
// the writes then find them done. It is only a head start: each write
// still prepares whatever is left, so a failed one is ignored.

// maxPrepare bounds the ranges one burst hands over: a full read buffer
// of 4 KiB writes.
const maxPrepare = readBufSize / 4096

// preparerOf is exp's backend as a dm.WritesPreparer, nil if it is none
// or the export is read-only.
func preparerOf(exp *Export) dm.WritesPreparer {
	if wp, ok := exp.Backend.(dm.WritesPreparer); ok && !exp.ReadOnly {
		return wp
	}
	return nil
}

// prepareBurst is called for each valid WRITE r (its header read, its
// payload next in the buffer) that is about to be served.
func (c *conn) prepareBurst(r *request) {
	if c.prep == nil {
		return
	}
	if c.prepared > 0 {
		c.prepared-- // r was in the last burst handed over
		return
	}
	rs := append(c.ranges[:0], dm.Range{Off: int64(r.offset), Len: int64(r.length)})
	buf, _ := c.br.Peek(c.br.Buffered())
	for pos := int(r.length); pos+requestSize <= len(buf) && len(rs) < maxPrepare; {
		next, err := decodeRequest(buf[pos : pos+requestSize])
		if err != nil {
			break
		}
		pos += requestSize
		if next.typ != cmdWrite {
			continue
		}
		if pos+int(next.length) > len(buf) {
			break // not all here: it may not be sent for a while
		}
		pos += int(next.length)
		if c.sess.validate(&next).errno == 0 {
			rs = append(rs, dm.Range{Off: int64(next.offset), Len: int64(next.length)})
		}
	}
	c.ranges = rs
	if len(rs) < 2 {
		return // a lone write prepares itself
	}
	c.prepared = len(rs) - 1
	_ = c.prep.PrepareWrites(rs)
}
