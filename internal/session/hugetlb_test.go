package session_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/client"
	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// TestHugetlbfs_Snapshot: a snapshot-origin volume on hugetlbfs memory,
// mapped by a client process. A snapshot with one-huge-page chunks is cut
// while the mapping stays writable: it holds the memory at cut time, the
// origin gets the later stores, and each first store to a huge page costs
// one fault that copies exactly that page. A chunk smaller than the huge
// page, and a map range not a multiple of it, are refused with messages
// naming the page size.
func TestHugetlbfs_Snapshot(t *testing.T) {
	const pages = 8
	mem, hp := testutil.HugetlbfsFile(t, pages, testutil.Reserved) // before newRigSized: the devices go before the unmount
	size := pages * hp
	r := newRigSized(t, size, "cow", "cow2")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d snapshot-origin %s\n", size/512, mem))
	if img := readAll(t, vol); len(img) != int(size) {
		t.Fatalf("volume has %d bytes, want %d", len(img), size)
	}
	// The fault counts below are exact only if a store faults once. Under
	// load a resolution can outlast the Go runtime's 10 ms preemption
	// tick; its signal then interrupts the waiting store, which faults
	// again (a second message for a page already resolved). The clients
	// run without asynchronous preemption, so that a count off by one
	// means a real extra fault.
	godebug := "asyncpreemptoff=1"
	if g := os.Getenv("GODEBUG"); g != "" {
		godebug = g + "," + godebug
	}
	t.Setenv("GODEBUG", godebug)
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", size)
	if p := r.srv.Audit(); len(p) != 0 {
		t.Errorf("audit of a hugetlbfs mapping: %+v", p)
	}
	c.Do("fill 1")
	before := readAll(t, vol)
	for p := 0; p < int(size/pageSize); p++ {
		if w := word(before, p); w != 1<<32|uint64(p) {
			t.Fatalf("block read of page %d = %#x after the client's fill, want %#x", p, w, 1<<32|uint64(p))
		}
	}

	// A chunk smaller than the huge page is refused: a write fault is
	// caught per huge page and its copy must cover all of it.
	small := fmt.Sprintf("0 %d snapshot %s %s N 8\n", size/512, mem, r.path("cow2"))
	if _, err := r.m.Create("small", dm.CreateOptions{Table: small}); err == nil {
		t.Fatal("snapshot with 4 KiB chunks of hugetlbfs memory was created, want it refused")
	} else {
		for _, want := range []string{"smaller than the " + strconv.FormatInt(hp, 10) + "-byte pages", "hugetlbfs", fmt.Sprintf("at least %d sectors", hp/512)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal of a 4 KiB chunk = %q, want it to mention %q", err, want)
			}
		}
	}
	if _, err := r.m.Get("small"); err == nil {
		t.Error("the refused snapshot device exists")
	}

	// The cut, with one-huge-page chunks.
	snap := r.create(t, "snap", fmt.Sprintf("0 %d snapshot %s %s N %d\n", size/512, mem, r.path("cow"), hp/512))
	st := r.srv.Stats()
	f0, p0, b0 := st.Faults.Load(), st.Prepared.Load(), st.PreparedBytes.Load()
	// Stores into three huge pages, not at their start; the second store
	// to a page already copied does not fault.
	want := bytes.Clone(before)
	touched := []int64{1, 3, 6}
	for _, hpg := range touched {
		off := hpg*hp + 12345
		c.Do("poke %d", off)
		want[off] = 0xa5
	}
	c.Do("poke %d", 3*hp+hp-1)
	want[3*hp+hp-1] = 0xa5
	if got := readAll(t, snap); !bytes.Equal(got, before) {
		t.Errorf("snapshot differs from the memory at the cut after stores to huge pages %v (first difference at byte %d)", touched, testutil.FirstDiff(got, before))
	}
	if got := readAll(t, vol); !bytes.Equal(got, want) {
		t.Errorf("origin lacks the stores after the cut (first difference at byte %d)", testutil.FirstDiff(got, want))
	}
	n := int64(len(touched))
	if f, p, b := st.Faults.Load()-f0, st.Prepared.Load()-p0, st.PreparedBytes.Load()-b0; f != n || p != n || b != n*hp {
		t.Errorf("stores to %d huge pages (one of them twice): %d faults, %d copy-before-write steps over %d bytes; want %d, %d, %d (one whole huge page each)",
			n, f, p, b, n, n, n*hp)
	}
	if got := cowSectors(t, snap); got != n*hp/512 {
		t.Errorf("snapshot COW holds %d sectors after stores to %d huge pages, want %d", got, n, n*hp/512)
	}

	// A second client maps after the snapshot: its mapping comes
	// protected; it rewrites everything, and the pages not copied yet
	// are copied first.
	c2 := clienttest.Start(t, r.srv.Socket())
	c2.Do("map vol 0 %d rw", size)
	c2.Do("fill 2")
	if got := readAll(t, snap); !bytes.Equal(got, before) {
		t.Errorf("snapshot differs from the memory at the cut after a later mapping's fill (first difference at byte %d)", testutil.FirstDiff(got, before))
	}
	after := readAll(t, vol)
	for p := 0; p < int(size/pageSize); p++ {
		if w := word(after, p); w != 2<<32|uint64(p) {
			t.Fatalf("origin page %d = %#x after the second client's fill, want %#x", p, w, 2<<32|uint64(p))
		}
	}
	// c2's mapping came protected whole: one fault per huge page, the
	// ones already copied cheap (nothing left to copy).
	if f, p, b := st.Faults.Load()-f0, st.Prepared.Load()-p0, st.PreparedBytes.Load()-b0; f != n+pages || b != p*hp {
		t.Errorf("after the second client's fill: %d faults, %d copy-before-write steps over %d bytes; want %d faults, whole huge pages",
			f, p, b, n+pages)
	}
	if got := cowSectors(t, snap); got != size/512 {
		t.Errorf("snapshot COW holds %d sectors after stores to every huge page, want %d (each huge page copied once)", got, size/512)
	}
	if st.HandlerErrors.Load() != 0 {
		t.Errorf("%d handler errors", st.HandlerErrors.Load())
	}
	if p := r.srv.Audit(); len(p) != 0 {
		t.Errorf("audit: %+v", p)
	}
	t.Logf("huge page %d bytes; faults %d, copy-before-write steps %d (%d bytes), sweeps %d", hp,
		st.Faults.Load(), st.Prepared.Load(), st.PreparedBytes.Load(), st.Sweeps.Load())

	// Map ranges that are not whole huge pages are refused.
	ctx := context.Background()
	cl, err := client.Dial(ctx, r.srv.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, o := range []client.MapOptions{
		{Offset: pageSize, Length: hp},
		{Offset: 0, Length: hp / 2},
		{Offset: hp, Length: hp + pageSize, Write: true},
	} {
		m, err := cl.Map(ctx, "vol", o)
		var ce *client.Error
		msg := fmt.Sprintf("page size, %d bytes", hp)
		if !errors.As(err, &ce) || ce.Code != wire.CodeInvalidArgument || !strings.Contains(ce.Message, msg) {
			if m != nil {
				m.Close()
			}
			t.Errorf("Map(offset %d, length %d) = %v; want an %s error mentioning %q", o.Offset, o.Length, err, wire.CodeInvalidArgument, msg)
		}
	}
	c.Do("quit")
	c2.Do("quit")
}

// cowSectors is the allocated sectors of a transient snapshot's COW store,
// from its status ("0 LEN snapshot ALLOC/TOTAL META").
func cowSectors(t *testing.T, snap *dm.Device) int64 {
	t.Helper()
	st, err := snap.Status(dm.Live)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(st)
	var alloc int64
	if len(f) < 4 || f[2] != "snapshot" {
		t.Fatalf("status of %s = %q, want a snapshot's", snap.Name(), st)
	}
	if _, err := fmt.Sscanf(f[3], "%d/", &alloc); err != nil {
		t.Fatalf("status of %s = %q: %v (invalid or overflowed?)", snap.Name(), st, err)
	}
	return alloc
}
