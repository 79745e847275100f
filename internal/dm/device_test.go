package dm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
)

func TestDevice_lifecycle(t *testing.T) {
	r := newRig(t)
	d, err := r.m.Create("vol", dm.CreateOptions{UUID: "U-1"})
	must(t, err)
	if in := d.Info(); in.LiveTable || in.InactiveTable || in.Suspended || in.UUID != "U-1" {
		t.Fatalf("fresh device info %+v", in)
	}
	if _, err := d.ReadAt(make([]byte, 512), 0); !errors.Is(err, dm.ErrNoTable) {
		t.Fatalf("read without table: %v, want ErrNoTable", err)
	}
	must(t, d.Load("0 16 fake mem 0"))
	if in := d.Info(); in.LiveTable || !in.InactiveTable {
		t.Fatalf("after load: %+v", in)
	}
	if s, _ := d.Table(dm.Inactive); s != "0 16 fake mem 0\n" {
		t.Fatalf("inactive table %q", s)
	}
	if s, _ := d.Table(dm.Live); s != "" {
		t.Fatalf("live table %q before resume", s)
	}
	must(t, d.Resume())
	in := d.Info()
	if !in.LiveTable || in.InactiveTable || in.Size != 16 || in.TargetCount != 1 || in.EventNr != 0 {
		// The kernel's event number: a load and a resume raise none.
		t.Fatalf("after resume: %+v", in)
	}
	if s, _ := d.Status(dm.Live); s != "0 16 fake \n" {
		t.Fatalf("status %q", s)
	}
	if d.Size() != 16*512 {
		t.Fatalf("size %d", d.Size())
	}
	// Reload, then clear: the live table is untouched.
	must(t, d.Load("0 8 fake mem 8\n8 8 fake mem 0"))
	must(t, d.Clear())
	if s, _ := d.Table(dm.Live); s != "0 16 fake mem 0\n" || d.Info().InactiveTable {
		t.Fatalf("after clear: live %q inactive %v", s, d.Info().InactiveTable)
	}
	// Reload and resume: the new table is live and I/O follows it.
	copy(r.mem.Bytes()[8*512:], "second half")
	must(t, d.Load("0 8 fake mem 8\n8 8 fake mem 0"))
	must(t, d.Resume())
	buf := make([]byte, 11)
	_, err = d.ReadAt(buf, 0)
	must(t, err)
	if string(buf) != "second half" {
		t.Fatalf("read %q after swap", buf)
	}
	must(t, r.m.Remove("vol", dm.RemoveOptions{}))
	if _, err := r.m.Get("vol"); !errors.Is(err, dm.ErrNotFound) {
		t.Fatalf("get after remove: %v", err)
	}
	if r.pool.Len() != 0 {
		t.Fatalf("%d devices open after remove", r.pool.Len())
	}
}

func TestDevice_createErrors(t *testing.T) {
	r := newRig(t)
	r.create(t, "a", "0 8 fake mem 0")
	if _, err := r.m.Create("a", dm.CreateOptions{}); !errors.Is(err, dm.ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	_, err := r.m.Create("b", dm.CreateOptions{UUID: "x"})
	must(t, err)
	if _, err := r.m.Create("c", dm.CreateOptions{UUID: "x"}); !errors.Is(err, dm.ErrExists) || !strings.Contains(err.Error(), "belongs to b") {
		t.Fatalf("duplicate uuid: %v", err)
	}
	for _, name := range []string{"", "a/b", ".", "..", " x", "a b", "a\nb", "a\tb", "a\x7fb", strings.Repeat("n", 128)} {
		if _, err := r.m.Create(name, dm.CreateOptions{}); !errors.Is(err, dm.ErrInvalidArgument) {
			t.Fatalf("name %q: %v", name, err)
		}
	}
	// A failed load leaves no device behind and no device open.
	if _, err := r.m.Create("d", dm.CreateOptions{Table: "0 8 fake nope 0"}); err == nil {
		t.Fatal("create with bad table succeeded")
	}
	if _, err := r.m.Get("d"); !errors.Is(err, dm.ErrNotFound) {
		t.Fatalf("device d exists after failed create: %v", err)
	}
}

func TestDevice_ioBounds(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 8 fake mem 0\n8 8 fake pmem 0")
	for _, tc := range []struct {
		off, n int64
	}{{-1, 1}, {8192, 1}, {8191, 2}, {0, 8193}} {
		_, err := d.ReadAt(make([]byte, tc.n), tc.off)
		if !errors.Is(err, dm.ErrOutOfRange) || dm.Errno(err) == 0 {
			t.Fatalf("read %d at %d: %v", tc.n, tc.off, err)
		}
		if err := d.Discard(tc.off, tc.n); !errors.Is(err, dm.ErrOutOfRange) {
			t.Fatalf("discard %d at %d: %v", tc.n, tc.off, err)
		}
	}
	// A write across the boundary lands on both devices.
	_, err := d.WriteAt([]byte("abcd"), 4094)
	must(t, err)
	if string(r.mem.Bytes()[4094:4096]) != "ab" || string(r.pmem.Bytes()[:2]) != "cd" {
		t.Fatal("write was not split at the target boundary")
	}
	must(t, d.WriteZeroes(4095, 2))
	if r.mem.Bytes()[4095] != 0 || r.pmem.Bytes()[0] != 0 || r.pmem.Bytes()[1] != 'd' {
		t.Fatal("write-zeroes was not split at the target boundary")
	}
	// Read-only devices refuse writes.
	ro, err := r.m.Create("ro", dm.CreateOptions{Table: "0 8 fake file 0", ReadOnly: true})
	must(t, err)
	if _, err := ro.WriteAt([]byte{1}, 0); !errors.Is(err, dm.ErrReadOnly) {
		t.Fatalf("write to read-only: %v", err)
	}
}

func TestDevice_directAccess(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 8 fake mem 8\n8 8 fake pmem 0\n16 8 fake file 0 nodax")
	b, err := d.DirectAccess(4000, 1000)
	must(t, err)
	if len(b) != 96 {
		t.Fatalf("direct access across a target boundary returned %d bytes, want 96 (to the end of the target)", len(b))
	}
	copy(b, "dax")
	if !bytes.Equal(r.mem.Bytes()[4096+4000:][:3], []byte("dax")) {
		t.Fatal("direct access memory is not the backing memory")
	}
	if _, err := d.DirectAccess(16*512, 512); !errors.Is(err, dm.ErrNotSupported) || !strings.Contains(err.Error(), "target fake has no direct access") {
		t.Fatalf("direct access to a non-DAX line: %v", err)
	}
	if _, err := d.DirectAccess(24*512, 1); !errors.Is(err, dm.ErrOutOfRange) {
		t.Fatalf("direct access past the end: %v", err)
	}
}

func TestDevice_suspendHoldsIO(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 16 fake mem 0")
	must(t, d.Suspend(dm.SuspendOptions{}))
	if !d.Info().Suspended {
		t.Fatal("not suspended")
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.WriteAt([]byte("held"), 0)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("write completed on a suspended device: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// Status, table and info answer while suspended; the write still waits.
	if _, err := d.Status(dm.Live); err != nil {
		t.Fatal(err)
	}
	if string(r.mem.Bytes()[:4]) == "held" {
		t.Fatal("write reached the device while suspended")
	}
	must(t, d.Resume())
	must(t, <-done)
	if string(r.mem.Bytes()[:4]) != "held" {
		t.Fatal("held write lost")
	}
	pre, post := hooks.presuspend.Load(), hooks.postsuspend.Load()
	must(t, d.Suspend(dm.SuspendOptions{}))
	must(t, d.Suspend(dm.SuspendOptions{})) // idempotent
	if hooks.presuspend.Load() != pre+1 || hooks.postsuspend.Load() != post+1 {
		t.Fatal("suspend hooks not called exactly once")
	}
	must(t, d.Resume())
}

func TestDevice_preresumeRefusal(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 16 fake mem 0")
	must(t, d.Load("0 8 fake mem 0\n8 8 fake mem 8"))
	hooks.refuseResume.Store(true)
	err := d.Resume()
	hooks.refuseResume.Store(false)
	if err == nil || !strings.Contains(err.Error(), "device stays suspended") {
		t.Fatalf("resume with refusing preresume: %v", err)
	}
	if in := d.Info(); !in.Suspended || !in.InactiveTable {
		t.Fatalf("after refused resume: %+v", in)
	}
	must(t, d.Resume())
	if s, _ := d.Table(dm.Live); s != "0 8 fake mem 0\n8 8 fake mem 8\n" {
		t.Fatalf("table after resume: %q", s)
	}
}

func TestDevice_remove(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 16 fake mem 0")
	must(t, d.Open())
	err := r.m.Remove("vol", dm.RemoveOptions{})
	if !errors.Is(err, dm.ErrBusy) || !strings.Contains(err.Error(), "open count 1") {
		t.Fatalf("remove of open device: %v", err)
	}
	if _, err := d.ReadAt(make([]byte, 8), 0); err != nil {
		t.Fatalf("refused remove harmed I/O: %v", err)
	}
	// Force: the table becomes error (DAX-capable, so allowed), still busy.
	err = r.m.Remove("vol", dm.RemoveOptions{Force: true})
	if !errors.Is(err, dm.ErrBusy) {
		t.Fatalf("forced remove of open device: %v", err)
	}
	if s, _ := d.Table(dm.Live); s != "0 16 error \n" {
		t.Fatalf("table after forced remove: %q, want error", s)
	}
	if _, err := d.ReadAt(make([]byte, 8), 0); !errors.Is(err, dm.ErrIO) {
		t.Fatalf("I/O after forced remove: %v, want EIO", err)
	}
	// Deferred: removed on last close.
	must(t, r.m.Remove("vol", dm.RemoveOptions{Deferred: true}))
	if !d.Info().DeferredRemove {
		t.Fatal("deferred remove not recorded")
	}
	if err := d.Open(); err == nil {
		t.Fatal("open of a device pending removal succeeded")
	}
	must(t, d.Close())
	if _, err := r.m.Get("vol"); !errors.Is(err, dm.ErrNotFound) {
		t.Fatalf("device still there after last close: %v", err)
	}
	if _, err := d.ReadAt(make([]byte, 8), 0); err == nil {
		t.Fatal("I/O on a removed device succeeded")
	}
}

func TestDevice_messageAndEvents(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 8 fake mem 0\n8 8 fake pmem 0")
	reply, err := d.Message(9, []string{"ping"})
	must(t, err)
	if reply != "pong pmem" {
		t.Fatalf("message reply %q", reply)
	}
	if _, err := d.Message(16, []string{"ping"}); !errors.Is(err, dm.ErrInvalidArgument) {
		t.Fatalf("message past end: %v", err)
	}
	if _, err := d.Message(0, []string{"nope"}); !errors.Is(err, dm.ErrInvalidArgument) {
		t.Fatalf("unknown message: %v", err)
	}
	nr := d.Info().EventNr
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan uint64, 1)
	go func() {
		n, _ := d.WaitEvent(ctx, nr)
		got <- n
	}()
	// A table swap raises no event (the kernel's rule); a rename does.
	must(t, d.Load("0 16 fake mem 0"))
	must(t, d.Resume())
	if got := d.Info().EventNr; got != nr {
		t.Fatalf("event number %d after load and resume, want %d", got, nr)
	}
	must(t, r.m.Rename("vol", "vol2"))
	if _, err := r.m.Get("vol2"); err != nil || d.Name() != "vol2" {
		t.Fatalf("rename: %v, name %q", err, d.Name())
	}
	if n := <-got; n != nr+1 {
		t.Fatalf("wait returned event %d, want %d", n, nr+1)
	}
}

func TestDevice_targetEventAndPrepareWrite(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 8 fake mem 0\n8 8 fake pmem 0")
	nr := d.Info().EventNr
	_, err := d.Message(0, []string{"event"})
	must(t, err)
	if got := d.Info().EventNr; got != nr+1 {
		t.Fatalf("event number %d after a target event, want %d", got, nr+1)
	}
	must(t, d.PrepareWrite(4000, 200))
	first, _ := d.Message(0, []string{"prepared"})
	second, _ := d.Message(8, []string{"prepared"})
	if first != "4000+96" || second != "0+104" {
		t.Fatalf("PrepareWrite split as %q and %q, want 4000+96 and 0+104", first, second)
	}
	if err := d.PrepareWrite(8000, 500); !errors.Is(err, dm.ErrOutOfRange) {
		t.Fatalf("PrepareWrite past the end: %v", err)
	}
}

// PrepareWrites hands each target that can share the work (a
// WritesPreparer) its pieces of all ranges in one call, in target
// offsets, and skips ranges outside the table: a head start is no error.
func TestDevice_prepareWritesBatchesPerTarget(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "vol", "0 8 fake mem 0\n8 8 fake pmem 0")
	must(t, d.PrepareWrites([]dm.Range{{Off: 0, Len: 512}, {Off: 4000, Len: 200}, {Off: 8000, Len: 500}, {Off: 6000, Len: 10}, {Off: -1, Len: 2}}))
	first, _ := d.Message(0, []string{"prepared"})
	second, _ := d.Message(8, []string{"prepared"})
	if first != "[0+512 4000+96]" || second != "[0+104 1904+10]" {
		t.Fatalf("PrepareWrites gave the lines %q and %q, want [0+512 4000+96] and [0+104 1904+10]", first, second)
	}
	one := r.create(t, "one", "0 8 fake mem 0")
	must(t, one.PrepareWrites([]dm.Range{{Off: 100, Len: 8}, {Off: 4096, Len: 1}, {Off: 0, Len: 0}}))
	if got, _ := one.Message(0, []string{"prepared"}); got != "[100+8]" {
		t.Fatalf("PrepareWrites on one line: %q, want [100+8]", got)
	}
}

// LiveTargets hands out the live table's lines with the targets built from
// them, in order; the inactive table is not the live one.
func TestDevice_liveTargets(t *testing.T) {
	r := newRig(t)
	d, err := r.m.Create("vol", dm.CreateOptions{})
	must(t, err)
	if d.LiveTargets(func(dm.TableLine, dm.Target) { t.Error("called without a live table") }) {
		t.Fatal("LiveTargets reported a live table on a fresh device")
	}
	must(t, d.Load("0 8 fake mem 0\n8 8 fake mem 16 nodax"))
	must(t, d.Resume())
	must(t, d.Load("0 16 fake mem 0"))
	var got []string
	ok := d.LiveTargets(func(l dm.TableLine, tg dm.Target) {
		got = append(got, fmt.Sprintf("%s:%T", l.String(), tg))
	})
	want := []string{"0 8 fake mem 0:dm_test.fakeDAXTarget", "8 8 fake mem 16 nodax:*dm_test.fakeTarget"}
	if !ok || !slices.Equal(got, want) {
		t.Fatalf("LiveTargets = %v, %q; want true, %q", ok, got, want)
	}
}

// Ensure that a rename raises an event only on a device with a live
// table, as the kernel's dm_hash_rename does (dmsetup create --notable,
// then rename: Event number stays 0), and that loading and resuming a
// table raises none.
func TestDevice_renameEventNeedsLiveTable(t *testing.T) {
	r := newRig(t)
	d := r.create(t, "bare", "")
	must(t, r.m.Rename("bare", "bare2"))
	if nr := d.Info().EventNr; nr != 0 {
		t.Fatalf("event number %d after renaming a device without a table, want 0", nr)
	}
	must(t, d.Load("0 16 fake mem 0"))
	must(t, d.Resume())
	must(t, r.m.Rename("bare2", "bare3"))
	if nr := d.Info().EventNr; nr != 1 {
		t.Fatalf("event number %d after a load, a resume and a rename with a live table, want 1", nr)
	}
}
