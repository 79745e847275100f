package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// CheckFile checks the bytes of a bbolt file before bbolt maps it. bbolt
// trusts its file: a truncated one makes it read past the end of its
// mapping (SIGBUS, which no recover catches), and garbage in a page makes
// it panic or read anywhere. CheckFile walks what bbolt will touch at
// Open and in a read (the meta page bbolt picks, the freelist, every
// branch and leaf page of every bucket, inline buckets included) and
// returns an error saying what is wrong at the first thing that is not
// inside the file or not what bbolt expects there. A nil error means
// every page bbolt can reach lies inside the file and is well formed; the
// order of keys is left to bbolt's own check (Tx.Check), which is safe to
// run once this has passed.
//
// Layout (go.etcd.io/bbolt/internal/common, little-endian): a page starts
// with a 16-byte header (id u64, flags u16, count u16, overflow u32);
// pages 0 and 1 are meta pages whose meta follows the header (magic u32,
// version u32, page size u32, flags u32, root bucket (root u64, sequence
// u64), freelist u64, high-water page u64, txid u64, then an FNV-64a
// checksum u64 of the 56 bytes before it). Branch elements are (pos u32,
// ksize u32, pgid u64) and leaf elements (flags u32, pos u32, ksize u32,
// vsize u32), pos counted from the element; a bucket's value is (root
// u64, sequence u64) followed, when root is 0, by an inline leaf page.
func CheckFile(data []byte) error {
	if len(data) < minPageSize {
		return fmt.Errorf("the file is %d bytes, too short to hold a database header (at least %d)", len(data), minPageSize)
	}
	ps, err := pageSizeOf(data)
	if err != nil {
		return err
	}
	m, err := pickMeta(data, ps)
	if err != nil {
		return err
	}
	if m.hwm < 2 || m.hwm > uint64(len(data))/uint64(ps) {
		return fmt.Errorf("the file is truncated or its header is damaged: the header says it holds %d pages of %d bytes (%d bytes), the file has %d bytes",
			m.hwm, ps, m.hwm*uint64(ps), len(data))
	}
	w := walker{data: data, ps: uint64(ps), hwm: m.hwm, seen: map[uint64]bool{0: true, 1: true}}
	if m.freelist != noFreelist {
		if err := w.freelist(m.freelist); err != nil {
			return err
		}
	}
	if m.root == 0 {
		return errors.New("the header's root bucket is inline (page 0): damaged")
	}
	return w.page(m.root, 0)
}

const (
	minPageSize = 1024
	maxPageSize = 1 << 24
	pageHeader  = 16
	elemSize    = 16
	metaMagic   = 0xED0CDAED
	metaVersion = 2
	noFreelist  = ^uint64(0)
	maxDepth    = 64

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagFreelist = 0x10
	bucketLeaf   = 0x01
)

type meta struct {
	pageSize        uint32
	root, freelist  uint64
	hwm, txid       uint64
	valid           bool
	validateProblem string
}

// readMeta decodes and validates the meta in the page at off.
func readMeta(data []byte, off int) meta {
	if off < 0 || off+pageHeader+64 > len(data) {
		return meta{validateProblem: "outside the file"}
	}
	b := data[off+pageHeader:]
	le := binary.LittleEndian
	m := meta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]),
		hwm: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}
	h := fnv.New64a()
	h.Write(b[:56])
	switch {
	case le.Uint32(b) != metaMagic:
		m.validateProblem = fmt.Sprintf("magic %#08x is not bbolt's %#08x", le.Uint32(b), uint32(metaMagic))
	case le.Uint32(b[4:]) != metaVersion:
		m.validateProblem = fmt.Sprintf("format version %d is not bbolt's %d", le.Uint32(b[4:]), metaVersion)
	case le.Uint64(b[56:]) != h.Sum64():
		m.validateProblem = "checksum mismatch"
	default:
		m.valid = true
	}
	return m
}

// pageSizeOf finds the page size as bbolt does: from meta 0, else from
// meta 1 at each possible page size.
func pageSizeOf(data []byte) (int, error) {
	m := readMeta(data, 0)
	if !m.valid {
		for ps := minPageSize; ps <= maxPageSize && ps < len(data)-minPageSize; ps <<= 1 {
			if m1 := readMeta(data, ps); m1.valid && int(m1.pageSize) == ps {
				m = m1
				break
			}
		}
	}
	if !m.valid {
		return 0, fmt.Errorf("no valid bbolt header (meta page 0: %s): this is not a daxsnap state file, or it is damaged", m.validateProblem)
	}
	ps := int(m.pageSize)
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		return 0, fmt.Errorf("the header's page size %d is not a power of two from %d to %d: damaged", ps, minPageSize, maxPageSize)
	}
	if len(data) < 2*ps {
		return 0, fmt.Errorf("the file is %d bytes, shorter than its two %d-byte header pages: truncated", len(data), ps)
	}
	return ps, nil
}

// pickMeta returns the meta bbolt uses: the one with the higher
// transaction id, unless it is invalid.
func pickMeta(data []byte, ps int) (meta, error) {
	a, b := readMeta(data, 0), readMeta(data, ps)
	if b.txid > a.txid {
		a, b = b, a
	}
	switch {
	case a.valid:
		return a, nil
	case b.valid:
		return b, nil
	}
	return meta{}, fmt.Errorf("both header pages are damaged (%s; %s)", a.validateProblem, b.validateProblem)
}

// walker visits pages, each at most once.
type walker struct {
	data    []byte
	ps, hwm uint64
	seen    map[uint64]bool
}

// span returns the bytes of page id and its overflow pages, marking them seen.
func (w *walker) span(id uint64, what string) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("%s refers to page %d, outside pages 2 to %d: damaged", what, id, w.hwm-1)
	}
	hdr := w.data[id*w.ps:]
	over := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if over >= w.hwm-id {
		return nil, fmt.Errorf("%s: page %d runs %d pages past the end of the file (high-water mark %d): damaged", what, id, over, w.hwm)
	}
	for p := id; p <= id+over; p++ {
		if w.seen[p] {
			return nil, fmt.Errorf("%s: page %d is reached twice: damaged", what, p)
		}
		w.seen[p] = true
	}
	return w.data[id*w.ps : (id+over+1)*w.ps], nil
}

func (w *walker) freelist(id uint64) error {
	p, err := w.span(id, "the freelist")
	if err != nil {
		return err
	}
	if flags := binary.LittleEndian.Uint16(p[8:]); flags != flagFreelist {
		return fmt.Errorf("the freelist page %d has flags %#x, not a freelist's %#x: damaged", id, flags, flagFreelist)
	}
	idx, count := uint64(0), uint64(binary.LittleEndian.Uint16(p[10:]))
	if count == 0xFFFF {
		if len(p) < pageHeader+8 {
			return fmt.Errorf("the freelist page %d is too short: damaged", id)
		}
		idx, count = 1, binary.LittleEndian.Uint64(p[pageHeader:])
	}
	room := uint64(len(p)-pageHeader) / 8
	if count > room || idx+count > room {
		return fmt.Errorf("the freelist page %d claims %d free pages, more than it holds: damaged", id, count)
	}
	for i := idx; i < idx+count; i++ {
		if free := binary.LittleEndian.Uint64(p[pageHeader+8*i:]); free < 2 || free >= w.hwm {
			return fmt.Errorf("the freelist lists page %d, outside pages 2 to %d: damaged", free, w.hwm-1)
		}
	}
	return nil
}

// page checks a branch or leaf page of a bucket and what it refers to.
func (w *walker) page(id uint64, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("the tree is more than %d pages deep at page %d: damaged", maxDepth, id)
	}
	p, err := w.span(id, "a bucket")
	if err != nil {
		return err
	}
	return w.node(p, fmt.Sprintf("page %d", id), depth, onPage)
}

// placement is where a node's bytes are.
type placement int

const (
	onPage   placement = iota // a page of the file
	inBucket                  // an inline bucket's value: a leaf, without buckets in it
)

// node checks the elements of a page given by its bytes p.
func (w *walker) node(p []byte, where string, depth int, at placement) error {
	inline := at == inBucket
	if len(p) < pageHeader {
		return fmt.Errorf("%s is too short for a page header: damaged", where)
	}
	le := binary.LittleEndian
	flags, count := le.Uint16(p[8:]), uint64(le.Uint16(p[10:]))
	if pageHeader+count*elemSize > uint64(len(p)) {
		return fmt.Errorf("%s claims %d elements, more than it holds: damaged", where, count)
	}
	switch {
	case flags == flagBranch && !inline:
		if count == 0 {
			return fmt.Errorf("%s is an empty branch page: damaged", where)
		}
		for i := range count {
			e := pageHeader + i*elemSize
			if err := w.inPage(p, e, le.Uint32(p[e:]), le.Uint32(p[e+4:]), 0, where); err != nil {
				return err
			}
			if err := w.page(le.Uint64(p[e+8:]), depth+1); err != nil {
				return err
			}
		}
	case flags == flagLeaf:
		for i := range count {
			e := pageHeader + i*elemSize
			ksize, vsize := le.Uint32(p[e+8:]), le.Uint32(p[e+12:])
			if err := w.inPage(p, e, le.Uint32(p[e+4:]), ksize, vsize, where); err != nil {
				return err
			}
			if le.Uint32(p[e:])&bucketLeaf == 0 {
				continue
			}
			if inline { // bbolt inlines only buckets without buckets in them
				return fmt.Errorf("%s holds a bucket: damaged", where)
			}
			start := e + uint64(le.Uint32(p[e+4:])) + uint64(ksize)
			v := p[start : start+uint64(vsize)]
			if len(v) < 16 {
				return fmt.Errorf("%s: a bucket's value is %d bytes, shorter than a bucket header: damaged", where, len(v))
			}
			if root := le.Uint64(v); root != 0 {
				if err := w.page(root, depth+1); err != nil {
					return err
				}
				continue
			}
			if err := w.node(v[16:], where+" (an inline bucket)", depth+1, inBucket); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%s has flags %#x where a branch or leaf page was expected: damaged", where, flags)
	}
	return nil
}

// inPage checks that the key and value of the element at offset e lie in p.
func (w *walker) inPage(p []byte, e uint64, pos, ksize, vsize uint32, where string) error {
	if end := e + uint64(pos) + uint64(ksize) + uint64(vsize); end > uint64(len(p)) {
		return fmt.Errorf("%s: an element's key and value end at byte %d, past the page's %d bytes: damaged", where, end, len(p))
	}
	return nil
}
