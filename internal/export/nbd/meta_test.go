package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// metaExports offers two dirty bitmaps on "disk" (none elsewhere), as
// the daemon offers qemu:dirty-bitmap:SINCE contexts.
type metaExports struct {
	*testExports
	maps map[string]MetaMap // by context name; nil map value: Meta fails
}

func (m metaExports) MetaContexts(c *Client, export string) []string {
	if export != "disk" {
		return nil
	}
	var out []string
	for name := range m.maps {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func (m metaExports) Open(c *Client, name string) (*Export, error) {
	x, err := m.testExports.Open(c, name)
	if err != nil {
		return nil, err
	}
	x.Meta = func(context string) (MetaMap, error) {
		mm, ok := m.maps[context]
		if !ok || mm == nil {
			return nil, errors.New("no such context")
		}
		return mm, nil
	}
	return x, nil
}

const (
	bitmapA = DirtyBitmapPrefix + "a"
	bitmapB = DirtyBitmapPrefix + "b"
	bitmapX = DirtyBitmapPrefix + "broken"
)

func metaRig(t *testing.T) (*testServer, *memBackend) {
	m := newMem(1 << 20)
	exp := newExports().add(Export{Name: "disk", Backend: m}).add(Export{Name: "other", Backend: newMem(4096)})
	me := metaExports{testExports: exp, maps: map[string]MetaMap{
		bitmapA: &Ranges{Size: 1 << 20, Flags: StateDirty, Offs: []int64{4096, 65536}, Lens: []int64{8192, 4096}},
		bitmapB: &Ranges{Size: 1 << 20, Flags: StateDirty, Offs: []int64{0}, Lens: []int64{1 << 20}},
		bitmapX: nil,
	}}
	ts := startServer(t, exp, Options{})
	ts.srv.exports = me
	return ts, m
}

func names(rs []optReply) []string {
	var out []string
	for _, r := range rs {
		if r.typ == repMetaContext {
			out = append(out, string(r.data[4:]))
		}
	}
	return out
}

// Ensure that LIST_META_CONTEXT lists the contexts the Exports offers
// besides base:allocation, by full name and by namespace prefix
// ("qemu:dirty-bitmap:", "qemu:"), for the export named only; and that
// SET selects by full name only, each with its own id.
func TestMeta_listAndSet(t *testing.T) {
	ts, _ := metaRig(t)
	c := dialRaw(t, "unix", ts.unix)
	c.clientFlags(clientFixedNewstyle | clientNoZeroes)
	c.expectOpt(optStructuredReply, nil, repAck)
	list := func(export string, queries ...string) []string {
		return names(c.expectOpt(optListMetaContext, appendMetaRequest(nil, metaRequest{name: export, queries: queries}), repAck))
	}
	all := []string{baseAllocationName, bitmapA, bitmapB, bitmapX}
	for _, tc := range []struct {
		export  string
		queries []string
		want    []string
	}{
		{"disk", nil, all},
		{"disk", []string{DirtyBitmapPrefix}, []string{bitmapA, bitmapB, bitmapX}},
		{"disk", []string{"qemu:"}, []string{bitmapA, bitmapB, bitmapX}},
		{"disk", []string{"base:"}, []string{baseAllocationName}},
		{"disk", []string{bitmapB, "qemu:dirty-bitmap:nonesuch", bitmapB}, []string{bitmapB}},
		{"disk", []string{"qemu:dirty-bitmap", "qemu", ""}, nil},
		{"other", []string{DirtyBitmapPrefix}, nil},
		{"other", nil, []string{baseAllocationName}},
	} {
		if got := list(tc.export, tc.queries...); !slices.Equal(got, tc.want) {
			t.Errorf("LIST %s %q = %q, want %q", tc.export, tc.queries, got, tc.want)
		}
	}
	set := func(export string, queries ...string) map[string]uint32 {
		rs := c.expectOpt(optSetMetaContext, appendMetaRequest(nil, metaRequest{name: export, queries: queries}), repAck)
		out := map[string]uint32{}
		for _, r := range rs {
			if r.typ == repMetaContext {
				out[string(r.data[4:])] = binary.BigEndian.Uint32(r.data)
			}
		}
		return out
	}
	if got := set("disk", DirtyBitmapPrefix, "qemu:"); len(got) != 0 {
		t.Errorf("SET of namespaces selected %v, want nothing", got)
	}
	got := set("disk", bitmapB, baseAllocationName, bitmapA, bitmapA)
	if len(got) != 3 || got[baseAllocationName] != baseAllocationID || got[bitmapA] == got[bitmapB] || got[bitmapA] == 0 || got[bitmapB] == 0 ||
		got[bitmapA] == baseAllocationID || got[bitmapB] == baseAllocationID {
		t.Errorf("SET a, b and base:allocation: ids %v, want three distinct non-zero ones", got)
	}
	if got := set("other", bitmapA, baseAllocationName); len(got) != 1 {
		t.Errorf("SET on an export without bitmaps selected %v", got)
	}
}

// Ensure that BLOCK_STATUS answers one chunk per selected context with
// the context's runs (dirty = 1), merged and cut to the request, REQ_ONE
// included; that a bitmap alone (without base:allocation) is enough; and
// that a context that fails to open fails BLOCK_STATUS with EIO instead
// of answering clean.
func TestMeta_blockStatus(t *testing.T) {
	ts, _ := metaRig(t)
	open := func(queries ...string) (*rawClient, map[string]uint32) {
		c := dialRaw(t, "unix", ts.unix)
		c.clientFlags(clientFixedNewstyle | clientNoZeroes)
		c.expectOpt(optStructuredReply, nil, repAck)
		c.structured = true
		ids := map[string]uint32{}
		for _, r := range c.expectOpt(optSetMetaContext, appendMetaRequest(nil, metaRequest{name: "disk", queries: queries}), repAck) {
			if r.typ == repMetaContext {
				ids[string(r.data[4:])] = binary.BigEndian.Uint32(r.data)
			}
		}
		c.expectOpt(optGo, appendInfoRequest(nil, infoRequest{name: "disk"}), repAck)
		return c, ids
	}
	c, ids := open(baseAllocationName, bitmapA, bitmapB)
	h := uint32(stateHole | stateZero)
	for _, tc := range []struct {
		off, n uint32
		flags  uint16
		a, b   string
	}{
		{0, 1 << 20, 0, "[[4096 0] [8192 1] [53248 0] [4096 1] [978944 0]]", "[[1048576 1]]"},
		{6000, 70000, 0, "[[6288 1] [53248 0] [4096 1] [6368 0]]", "[[70000 1]]"},
		{8192, 100, 0, "[[100 1]]", "[[100 1]]"},
		{0, 1 << 20, cmdFlagReqOne, "[[4096 0]]", "[[1048576 1]]"},
		{69632, 4096, 0, "[[4096 0]]", "[[4096 1]]"},
	} {
		rep := c.do(request{typ: cmdBlockStatus, flags: tc.flags, cookie: 7, offset: uint64(tc.off), length: tc.n}, nil)
		if rep.errno != 0 || len(rep.chunks) != 3 {
			t.Fatalf("BLOCK_STATUS %d+%d: %v", tc.off, tc.n, rep)
		}
		if got := fmt.Sprint(rep.byContext[ids[bitmapA]]); got != tc.a {
			t.Errorf("BLOCK_STATUS %d+%d flags %d, bitmap a: %s, want %s", tc.off, tc.n, tc.flags, got, tc.a)
		}
		if got := fmt.Sprint(rep.byContext[ids[bitmapB]]); got != tc.b {
			t.Errorf("BLOCK_STATUS %d+%d flags %d, bitmap b: %s, want %s", tc.off, tc.n, tc.flags, got, tc.b)
		}
		if got := rep.byContext[baseAllocationID]; len(got) == 0 || got[0][1] != h {
			t.Errorf("BLOCK_STATUS %d+%d: base:allocation %v, want a hole first", tc.off, tc.n, got)
		}
	}
	only, ids := open(bitmapA)
	rep := only.do(request{typ: cmdBlockStatus, cookie: 8, offset: 0, length: 16384}, nil)
	if rep.errno != 0 || len(rep.chunks) != 1 || fmt.Sprint(rep.byContext[ids[bitmapA]]) != "[[4096 0] [8192 1] [4096 0]]" {
		t.Fatalf("BLOCK_STATUS with the bitmap alone: %v %v", rep, rep.byContext)
	}
	broken, _ := open(bitmapX)
	if rep := broken.do(request{typ: cmdBlockStatus, cookie: 9, length: 4096}, nil); rep.errno != errIO {
		t.Fatalf("BLOCK_STATUS of a context that did not open: %v, want EIO", rep)
	}
}

// Ensure that Ranges.Status agrees with a byte map of the same ranges
// for random ranges and queries, and always covers a prefix of the query
// with runs of alternating flags.
func TestRanges_status(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		size := int64(1 + r.IntN(1<<14))
		dirty := make([]bool, size)
		rg := &Ranges{Size: size, Flags: StateDirty}
		for pos := int64(r.IntN(64)); pos < size; pos += int64(1 + r.IntN(512)) {
			n := min(int64(1+r.IntN(300)), size-pos)
			rg.Offs, rg.Lens = append(rg.Offs, pos), append(rg.Lens, n)
			for i := pos; i < pos+n; i++ {
				dirty[i] = true
			}
			pos += n
		}
		for range 20 {
			off := int64(r.IntN(int(size)))
			n := int64(1 + r.IntN(int(size-off)))
			runs, err := rg.Status(off, n)
			if err != nil {
				t.Fatal(err)
			}
			pos := off
			for i, e := range runs {
				if e.Length <= 0 || i > 0 && runs[i-1].Flags == e.Flags {
					t.Fatalf("runs %v: empty or not alternating", runs)
				}
				for x := pos; x < pos+e.Length; x++ {
					if dirty[x] != (e.Flags == StateDirty) {
						t.Fatalf("Status(%d, %d) = %v: byte %d is dirty=%v", off, n, runs, x, dirty[x])
					}
				}
				pos += e.Length
			}
			if pos != off+n {
				t.Fatalf("Status(%d, %d) = %v covers up to %d", off, n, runs, pos)
			}
		}
	}
	if _, err := (&Ranges{Size: 10}).Status(10, 1); err == nil {
		t.Fatal("Status past the end: no error")
	}
}

// metaHandshake negotiates structured replies, then runs queries (a
// LIST and a SET of the fuzzer's choosing) before GO on "disk".
func metaHandshake(list, set []byte) []byte {
	return handshakeGo(negOpt{optStructuredReply, nil}, negOpt{optListMetaContext, list}, negOpt{optSetMetaContext, set})
}

// FuzzMetaContext feeds arbitrary LIST_META_CONTEXT and
// SET_META_CONTEXT data, then arbitrary transmission bytes, to a server
// offering dirty bitmaps: it must neither panic nor hang, and must
// release what it opened.
func FuzzMetaContext(f *testing.F) {
	good := appendMetaRequest(nil, metaRequest{name: "disk", queries: []string{bitmapA, baseAllocationName, bitmapX}})
	f.Add(appendMetaRequest(nil, metaRequest{name: "disk", queries: []string{DirtyBitmapPrefix}}), good,
		appendRequest(nil, request{typ: cmdBlockStatus, cookie: 1, length: 1 << 20}))
	f.Add(appendMetaRequest(nil, metaRequest{name: "disk"}), good,
		appendRequest(nil, request{typ: cmdBlockStatus, flags: cmdFlagReqOne, cookie: 1, offset: 4095, length: 3}))
	f.Add([]byte{0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 0, 0, 9}, []byte{0xff, 0xff, 0xff, 0xff}, []byte{})
	m := newMem(1 << 20)
	exp := newExports().add(Export{Name: "disk", Backend: m})
	me := metaExports{testExports: exp, maps: map[string]MetaMap{
		bitmapA: &Ranges{Size: 1 << 20, Flags: StateDirty, Offs: []int64{4096}, Lens: []int64{8192}},
		bitmapX: nil,
	}}
	srv := NewServer(me, Options{Logger: discardLogger(), HandshakeTimeout: time.Second})
	f.Fuzz(func(t *testing.T, list, set, tail []byte) {
		if len(list) > maxOptionData || len(set) > maxOptionData {
			return
		}
		feedConn(t, srv, exp, metaHandshake(list, set), tail)
	})
}
