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

// blockStatus builds the NBD_REPLY_TYPE_BLOCK_STATUS payload for
// base:allocation: the context id, then (length, flags) descriptors
// covering a prefix of the request, never past its end. Adjacent
// extents with equal flags are merged; with REQ_ONE only the first run
// is sent. Without an Extenter the whole range is data.
func (c *conn) blockStatus(r *request) ([]byte, error) {
	off, n := int64(r.offset), int64(r.length)
	out := binary.BigEndian.AppendUint32(make([]byte, 0, 12), baseAllocationID)
	if c.ext == nil {
		return appendDescriptor(out, uint32(n), 0), nil
	}
	exts, err := c.ext.Extents(off, n)
	if err != nil {
		return nil, err
	}
	var sum int64
	count := 0
	for _, e := range exts {
		if e.Length <= 0 {
			continue
		}
		l := min(e.Length, n-sum)
		flags := uint32(0)
		if e.Hole {
			flags |= stateHole
		}
		if e.Zero {
			flags |= stateZero
		}
		last := len(out) - 8
		if count > 0 && binary.BigEndian.Uint32(out[last+4:]) == flags {
			binary.BigEndian.PutUint32(out[last:], binary.BigEndian.Uint32(out[last:])+uint32(l))
		} else {
			if count > 0 && r.flags&cmdFlagReqOne != 0 || count == maxDescriptors {
				break
			}
			out = appendDescriptor(out, uint32(l), flags)
			count++
		}
		if sum += l; sum >= n {
			break
		}
	}
	if count == 0 {
		out = appendDescriptor(out, uint32(n), 0)
	}
	return out, nil
}

func appendDescriptor(b []byte, length, flags uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, length)
	return binary.BigEndian.AppendUint32(b, flags)
}
