package dm_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// names lists the devices' names.
func names(devs []*dm.Device) string {
	var out []string
	for _, d := range devs {
		out = append(out, d.Name())
	}
	return strings.Join(out, " ")
}

// Ensure that a mapped device opened as a backing device keeps the
// backing.Device contract, read-write and read-only.
func TestStack_backingConformance(t *testing.T) {
	for _, ro := range []bool{false, true} {
		t.Run(fmt.Sprintf("readOnly=%v", ro), func(t *testing.T) {
			r := newRig(t)
			r.create(t, "low", "0 2048 fake mem 0")
			backingtest.Run(t, func(t *testing.T) backing.Device {
				dev, err := r.m.Open(dm.MapperPrefix+"low", backing.Options{ReadOnly: ro})
				must(t, err)
				return dev
			})
			if in := mustGet(t, r.m, "low").Info(); in.OpenCount != 0 {
				t.Fatalf("low open count %d after every stacked open closed, want 0", in.OpenCount)
			}
		})
	}
}

func mustGet(t *testing.T, m *dm.Manager, name string) *dm.Device {
	t.Helper()
	d, err := m.Get(name)
	must(t, err)
	return d
}

// Ensure that tables stack on mapped devices by name and by number, that
// the lower device counts the table's open, and that the dependencies are
// the devices the tables opened: Below, Above, Over and StackOrder.
func TestStack_dependencies(t *testing.T) {
	r := newRig(t)
	low := r.create(t, "z-low", "0 2048 fake mem 0")
	mid := r.create(t, "mid", "0 2048 fake /dev/mapper/z-low 0")
	top := r.create(t, "a-top", fmt.Sprintf("0 1024 fake %s%d 0\n1024 1024 fake /dev/mapper/z-low 1024", dm.NodePrefix, mid.Number()))
	other := r.create(t, "other", "0 8 fake file 0")

	data := bytes.Repeat([]byte("stack"), 200)
	if _, err := top.WriteAt(data, 4096); err != nil {
		t.Fatal(err)
	}
	if got := r.mem.Bytes()[4096 : 4096+len(data)]; !bytes.Equal(got, data) {
		t.Fatal("a write through a-top, mid and z-low did not reach mem")
	}
	if got, want := names(top.Below()), "mid z-low"; got != want {
		t.Errorf("a-top below = %q, want %q", got, want)
	}
	if got, want := names(r.m.Above(low)), "a-top mid"; got != want {
		t.Errorf("above z-low = %q, want %q", got, want)
	}
	if got, want := names(r.m.Over(low)), "a-top mid"; got != want {
		t.Errorf("over z-low = %q, want %q", got, want)
	}
	if got := names(r.m.Over(other)) + names(other.Below()); got != "" {
		t.Errorf("other stacks or is stacked on: %q", got)
	}
	if got, want := names(r.m.StackOrder()), "other z-low mid a-top"; got != want {
		t.Errorf("stack order = %q, want %q", got, want)
	}
	// One open per device over it (mid, a-top), whatever the number of
	// lines, as the kernel counts, held by tables.
	if hs := low.Holders(); len(hs) != 1 || hs[0].Kind != dm.HolderTable || hs[0].N != 2 || low.Info().OpenCount != 2 {
		t.Errorf("z-low holders %+v, open count %d", hs, low.Info().OpenCount)
	}
	err := r.m.Remove("z-low", dm.RemoveOptions{})
	if !errors.Is(err, dm.ErrBusy) {
		t.Fatalf("remove of a device under tables: %v, want ErrBusy", err)
	}

	// An inactive table's devices count too; clearing it lets go.
	must(t, other.Load("0 8 fake /dev/mapper/mid 0"))
	if got := names(r.m.Above(mid)); got != "a-top other" {
		t.Errorf("above mid with other's inactive table = %q", got)
	}
	must(t, other.Clear())
	if got := names(r.m.Above(mid)); got != "a-top" {
		t.Errorf("above mid after clear = %q", got)
	}

	must(t, r.m.Remove("a-top", dm.RemoveOptions{}))
	must(t, r.m.Remove("mid", dm.RemoveOptions{}))
	if in := low.Info(); in.OpenCount != 0 || len(r.m.Above(low)) != 0 {
		t.Fatalf("z-low after the tables over it went: %+v, above %q", in, names(r.m.Above(low)))
	}
	must(t, r.m.Remove("z-low", dm.RemoveOptions{}))
}

// Ensure that a table naming a device that is missing, or has no live
// table yet, is refused with a StackError that says which.
func TestStack_openErrors(t *testing.T) {
	r := newRig(t)
	r.create(t, "empty", "")
	for _, tc := range []struct {
		ref, name string
		noTable   bool
		msg       []string
	}{
		{"/dev/mapper/nope", "", false, []string{"/dev/mapper/nope", "no such mapped device", "create it first"}},
		{"/dev/dm-99", "", false, []string{"/dev/dm-99", "no such mapped device"}},
		{"/dev/dm-x", "", false, []string{"/dev/dm-x", "no such mapped device"}},
		{"/dev/mapper/empty", "empty", true, []string{"has no live table", "load one and resume it"}},
	} {
		_, err := r.m.Create("x", dm.CreateOptions{Table: "0 8 fake " + tc.ref + " 0"})
		var se *dm.StackError
		if !errors.As(err, &se) || se.Name != tc.name || se.NoTable != tc.noTable || !errors.Is(err, dm.ErrInvalidTable) {
			t.Errorf("table over %s: %v (%+v), want a StackError for %q, no table %v", tc.ref, err, se, tc.name, tc.noTable)
			continue
		}
		for _, m := range tc.msg {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("table over %s: %q does not say %q", tc.ref, err, m)
			}
		}
	}
	if _, err := r.m.Get("x"); err == nil {
		t.Fatal("a device whose table failed was kept")
	}
}

// Ensure that no table makes a device sit under itself, directly or
// through other devices, also when two loads race to close a loop.
func TestStack_loops(t *testing.T) {
	r := newRig(t)
	a := r.create(t, "a", "0 8 fake mem 0")
	b := r.create(t, "b", "0 8 fake /dev/mapper/a 0")
	c := r.create(t, "c", "0 8 fake /dev/mapper/b 0")
	for _, tc := range []struct {
		dev       *dm.Device
		table, is string
	}{
		{a, "0 8 fake /dev/mapper/a 0", "the device itself"},
		{a, fmt.Sprintf("0 8 fake %s%d 0", dm.NodePrefix, a.Number()), "the device itself"},
		{a, "0 8 fake /dev/mapper/c 0", "cannot sit under itself"},
		{b, "0 8 fake /dev/mapper/c 0", "cannot sit under itself"},
	} {
		err := tc.dev.Load(tc.table)
		if !errors.Is(err, dm.ErrInvalidTable) || !strings.Contains(err.Error(), tc.is) {
			t.Errorf("load %s %q: %v, want ErrInvalidTable saying %q", tc.dev.Name(), tc.table, err, tc.is)
		}
	}
	if in := a.Info(); in.InactiveTable || in.OpenCount != 1 {
		t.Fatalf("a after refused loads: %+v, want no inactive table and b's open only", in)
	}

	// x and y, each over mem, each loading a table over the other: at most
	// one load wins, whatever the interleaving.
	for range 50 {
		x := r.create(t, "x", "0 8 fake mem 0")
		y := r.create(t, "y", "0 8 fake mem 0")
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, p := range [][2]*dm.Device{{x, y}, {y, x}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = p[0].Load("0 8 fake /dev/mapper/" + p[1].Name() + " 0")
			}()
		}
		wg.Wait()
		if errs[0] == nil && errs[1] == nil {
			t.Fatal("two racing loads made x and y sit on each other")
		}
		must(t, x.Clear())
		must(t, y.Clear())
		must(t, r.m.Remove("x", dm.RemoveOptions{}))
		must(t, r.m.Remove("y", dm.RemoveOptions{}))
	}
	_ = c
}

// Ensure that a table holds a mapped device by identity: renaming the
// device keeps the table working and makes it print the new name, and a
// new device taking the old name is another device.
func TestStack_renameKeepsIdentity(t *testing.T) {
	r := newRig(t)
	low := r.create(t, "low", "0 2048 fake mem 0")
	num := low.Number()
	top := r.create(t, "top", "0 2048 fake /dev/mapper/low 0")
	must(t, r.m.Rename("low", "base"))
	if low.Number() != num {
		t.Fatalf("rename changed the device number %d to %d", num, low.Number())
	}
	if got, _ := top.Table(dm.Live); got != "0 2048 fake /dev/mapper/base 0\n" {
		t.Fatalf("top's table after the rename: %q", got)
	}
	data := []byte("by identity")
	if _, err := top.WriteAt(data, 512); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.mem.Bytes()[512:512+len(data)], data) {
		t.Fatal("top's write did not reach base")
	}
	other := r.create(t, "low", "0 2048 fake pmem 0")
	if other.Number() == num {
		t.Fatalf("a new device got the number %d of a live one", num)
	}
	if got := names(top.Below()); got != "base" {
		t.Fatalf("top below = %q, want base", got)
	}
}

// Ensure that device numbers are unique, that a number can be asked for
// (a restart keeping them), and that one in use is refused.
func TestStack_numbers(t *testing.T) {
	r := newRig(t)
	a := r.create(t, "a", "")
	b := r.create(t, "b", "")
	// The kernel's minors: the lowest free one, from 0.
	if a.Number() != 0 || b.Number() != 1 {
		t.Fatalf("numbers %d and %d, want 0 and 1", a.Number(), b.Number())
	}
	c, err := r.m.Create("c", dm.CreateOptions{Persistent: true, Number: 40})
	must(t, err)
	if c.Number() != 40 {
		t.Fatalf("asked for number 40, got %d", c.Number())
	}
	if _, err := r.m.Create("d", dm.CreateOptions{Persistent: true, Number: 40}); !errors.Is(err, dm.ErrExists) || !strings.Contains(err.Error(), "c") {
		t.Fatalf("a second device number 40: %v, want ErrExists naming c", err)
	}
	if _, err := r.m.Create("d", dm.CreateOptions{Persistent: true, Number: dm.MaxMinor + 1}); !errors.Is(err, dm.ErrInvalidArgument) {
		t.Fatalf("a number beyond the largest minor: %v, want ErrInvalidArgument", err)
	}
	d := r.create(t, "d", "")
	if d.Number() != 2 {
		t.Fatalf("next number with 0, 1 and 40 taken is %d, want 2", d.Number())
	}
	must(t, r.m.Remove("a", dm.RemoveOptions{}))
	if e := r.create(t, "e", ""); e.Number() != 0 {
		t.Fatalf("number after a's removal is %d, want a's 0 again", e.Number())
	}
	if got, err := r.m.GetByNumber(40); err != nil || got != c {
		t.Fatalf("GetByNumber(40) = %v, %v; want c", got, err)
	}
	if _, err := r.m.GetByNumber(41); !errors.Is(err, dm.ErrNotFound) {
		t.Fatalf("GetByNumber(41): %v, want ErrNotFound", err)
	}
}

// Ensure that a mapped device counts one open per device whose tables
// use it, as the kernel does (LVM's ORIGIN-real under the origin and a
// snapshot: 2): lines of one table and the live and inactive tables of
// one device share theirs.
func TestStack_openCountPerDevice(t *testing.T) {
	r := newRig(t)
	low := r.create(t, "low", "0 2048 fake mem 0")
	open := func() int { return low.Info().OpenCount }
	r.create(t, "a", "0 1024 fake /dev/mapper/low 0\n1024 1024 fake /dev/mapper/low 1024")
	if got := open(); got != 1 {
		t.Fatalf("open count %d under one device's table of two lines, want 1", got)
	}
	b := r.create(t, "b", "0 2048 fake /dev/mapper/low 0")
	if got := open(); got != 2 {
		t.Fatalf("open count %d under two devices' tables, want 2", got)
	}
	must(t, b.Load("0 1024 fake /dev/mapper/low 0"))
	if got := open(); got != 2 {
		t.Fatalf("open count %d with b's live and inactive tables on it, want 2", got)
	}
	must(t, b.Resume())
	if got := open(); got != 2 {
		t.Fatalf("open count %d after b's swap, want 2", got)
	}
	must(t, r.m.Remove("a", dm.RemoveOptions{}))
	if got := open(); got != 1 {
		t.Fatalf("open count %d once a is gone, want 1", got)
	}
	must(t, r.m.Remove("b", dm.RemoveOptions{}))
	if got := open(); got != 0 {
		t.Fatalf("open count %d once b is gone, want 0", got)
	}
	must(t, r.m.Remove("low", dm.RemoveOptions{}))
}
