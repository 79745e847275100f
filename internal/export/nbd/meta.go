package nbd

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// Metadata contexts besides base:allocation (NBD_OPT_LIST_META_CONTEXT,
// NBD_OPT_SET_META_CONTEXT, NBD_CMD_BLOCK_STATUS). The daemon supplies
// them: MetaContexter names what an export offers during the handshake,
// Export.Meta opens the selected ones for the connection at NBD_OPT_GO.
// The server knows nothing of what they mean; it lists, selects, and
// sends their extents.

// Namespaces and names of the contexts the server understands queries for.
const (
	// DirtyBitmapPrefix starts qemu's dirty bitmap contexts,
	// "qemu:dirty-bitmap:NAME" (qemu docs/interop/nbd.txt).
	DirtyBitmapPrefix = "qemu:dirty-bitmap:"
	// StateDirty is the one flag of a qemu:dirty-bitmap context: the
	// extent is dirty (changed); 0 is clean.
	StateDirty = 1 << 0
)

// MetaContexter is implemented by an Exports that offers metadata
// contexts besides base:allocation.
type MetaContexter interface {
	// MetaContexts returns the full names of the contexts export offers
	// c (for instance "qemu:dirty-bitmap:s1"), besides base:allocation:
	// none if c may not open export, or it does not exist.
	MetaContexts(c *Client, export string) []string
}

// MetaExtent is one run of a metadata context: Length bytes with Flags.
type MetaExtent struct {
	Length int64
	Flags  uint32
}

// MetaMap is an opened metadata context: it describes consecutive runs
// from off covering at least a prefix of [off, off+n); runs past off+n
// are ignored. It is called concurrently.
type MetaMap interface {
	Status(off, n int64) ([]MetaExtent, error)
}

// Ranges is a MetaMap of sorted, disjoint byte ranges that have flags
// Flags over an export of Size bytes; the rest has flags 0. A
// qemu:dirty-bitmap context is Ranges with Flags StateDirty.
type Ranges struct {
	Size  int64
	Flags uint32
	// Offs and Lens are the ranges, sorted by offset.
	Offs, Lens []int64
}

// Status answers from the ranges: runs of flagged and unflagged bytes.
func (r *Ranges) Status(off, n int64) ([]MetaExtent, error) {
	end := min(off+n, r.Size)
	if off >= end {
		return nil, fmt.Errorf("status of %d bytes at offset %d: past the end (%d bytes)", n, off, r.Size)
	}
	i, _ := slices.BinarySearch(r.Offs, off)
	if i > 0 && r.Offs[i-1]+r.Lens[i-1] > off {
		i--
	}
	var out []MetaExtent
	for pos := off; pos < end; {
		if i < len(r.Offs) && r.Offs[i] <= pos {
			stop := min(r.Offs[i]+r.Lens[i], end)
			out = append(out, MetaExtent{Length: stop - pos, Flags: r.Flags})
			pos = stop
			i++
			continue
		}
		stop := end
		if i < len(r.Offs) {
			stop = min(stop, r.Offs[i])
		}
		out = append(out, MetaExtent{Length: stop - pos})
		pos = stop
	}
	return out, nil
}

// metaSel is a context selected by NBD_OPT_SET_META_CONTEXT.
type metaSel struct {
	id   uint32
	name string
}

// offered lists the contexts export offers the client, base:allocation
// first.
func (c *conn) offered(export string) []string {
	out := []string{baseAllocationName}
	if mc, ok := c.srv.exports.(MetaContexter); ok {
		for _, name := range mc.MetaContexts(&c.client, export) {
			if name != baseAllocationName && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	return out
}

// matchQuery reports whether context name answers query q. With list
// (NBD_OPT_LIST_META_CONTEXT), a query ending in ':' is a prefix: "base:"
// lists base:allocation, "qemu:" every qemu context,
// "qemu:dirty-bitmap:" every bitmap. SET selects by full name only.
func matchQuery(q, name string, list bool) bool {
	if q == name {
		return true
	}
	return list && strings.HasSuffix(q, ":") && strings.HasPrefix(name, q)
}

// selectMeta answers a LIST or SET query set: the contexts to reply
// with, in the order offered, each once.
func selectMeta(offered, queries []string, list bool) []string {
	if list && len(queries) == 0 {
		return offered
	}
	var out []string
	for _, name := range offered {
		for _, q := range queries {
			if matchQuery(q, name, list) {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// appendMetaReply is an NBD_REP_META_CONTEXT payload.
func appendMetaReply(b []byte, id uint32, name string) []byte {
	return append(binary.BigEndian.AppendUint32(b, id), name...)
}
