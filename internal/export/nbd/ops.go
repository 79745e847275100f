package nbd

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// zeroes is written where a zeroed range must be allocated. WriteAt
// never modifies its buffer, so one shared slice serves every writer.
var zeroes = make([]byte, 1<<20)

// maxDescriptors caps one BLOCK_STATUS chunk (the spec asks for at most
// 2^20); the client asks again from where the reply stopped.
const maxDescriptors = 1 << 16

func notSupported(err error) bool {
	return err != nil && dm.Errno(err) == syscall.EOPNOTSUPP
}

// writeZeroes serves NBD_CMD_WRITE_ZEROES. Without NO_HOLE the backend
// may deallocate; with it the zeroes are written as data, since
// Backend.WriteZeroes does not promise allocation. FAST_ZERO (only
// advertised for a FastZeroer) fails with ENOTSUP whenever the request
// would need data writes, before changing anything.
func (c *conn) writeZeroes(r *request) error {
	off, n := int64(r.offset), int64(r.length)
	fast := r.flags&cmdFlagFastZero != 0
	if r.flags&cmdFlagNoHole == 0 {
		err := c.be.WriteZeroes(off, n)
		if !notSupported(err) || fast {
			return err
		}
	} else if fast {
		return fmt.Errorf("%w: NO_HOLE zeroes must be written as data, which is not fast", dm.ErrNotSupported)
	}
	for n > 0 {
		chunk := min(n, int64(len(zeroes)))
		if _, err := c.be.WriteAt(zeroes[:chunk], off); err != nil {
			return err
		}
		off, n = off+chunk, n-chunk
	}
	return nil
}

// blockStatus builds the NBD_REPLY_TYPE_BLOCK_STATUS payloads, one per
// selected context (base:allocation first): the context id, then
// (length, flags) descriptors covering a prefix of the request, never
// past its end. Adjacent runs with equal flags are merged; with REQ_ONE
// only the first run is sent. Without an Extenter base:allocation is
// all data.
func (c *conn) blockStatus(r *request) ([][]byte, error) {
	off, n := int64(r.offset), int64(r.length)
	var out [][]byte
	if c.sess.metaAlloc {
		var runs []MetaExtent
		if c.ext == nil {
			runs = []MetaExtent{{Length: n}}
		} else {
			exts, err := c.ext.Extents(off, n)
			if err != nil {
				return nil, err
			}
			runs = make([]MetaExtent, len(exts))
			for i, e := range exts {
				runs[i].Length = e.Length
				if e.Hole {
					runs[i].Flags |= stateHole
				}
				if e.Zero {
					runs[i].Flags |= stateZero
				}
			}
		}
		out = append(out, descriptors(baseAllocationID, runs, n, r.flags&cmdFlagReqOne != 0))
	}
	for i, sel := range c.sess.meta {
		m := c.metaMaps[i]
		if m == nil {
			return nil, fmt.Errorf("%w: metadata context %s could not be opened for this connection", dm.ErrIO, sel.name)
		}
		runs, err := m.Status(off, n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sel.name, err)
		}
		out = append(out, descriptors(sel.id, runs, n, r.flags&cmdFlagReqOne != 0))
	}
	return out, nil
}

// descriptors is one BLOCK_STATUS payload for context id from runs,
// covering a prefix of n bytes (all n if runs say nothing).
func descriptors(id uint32, runs []MetaExtent, n int64, reqOne bool) []byte {
	out := binary.BigEndian.AppendUint32(make([]byte, 0, 12), id)
	var sum int64
	count := 0
	for _, e := range runs {
		if e.Length <= 0 {
			continue
		}
		l := min(e.Length, n-sum)
		last := len(out) - 8
		if count > 0 && binary.BigEndian.Uint32(out[last+4:]) == e.Flags {
			binary.BigEndian.PutUint32(out[last:], binary.BigEndian.Uint32(out[last:])+uint32(l))
		} else {
			if count > 0 && reqOne || count == maxDescriptors {
				break
			}
			out = appendDescriptor(out, uint32(l), e.Flags)
			count++
		}
		if sum += l; sum >= n {
			break
		}
	}
	if count == 0 {
		out = appendDescriptor(out, uint32(n), 0)
	}
	return out
}

// openMeta opens the contexts the session selected besides
// base:allocation. One that fails stays selected (the client was told
// it is) and fails the requests that need it.
func (c *conn) openMeta(exp *Export) {
	c.metaMaps = make([]MetaMap, len(c.sess.meta))
	for i, sel := range c.sess.meta {
		if exp.Meta == nil {
			c.log.Warn("nbd: a selected metadata context has no opener", "context", sel.name)
			continue
		}
		m, err := exp.Meta(sel.name)
		if err != nil {
			c.log.Warn("nbd: metadata context not opened; BLOCK_STATUS will fail", "context", sel.name, "err", err)
			continue
		}
		c.metaMaps[i] = m
	}
}

func appendDescriptor(b []byte, length, flags uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, length)
	return binary.BigEndian.AppendUint32(b, flags)
}
