package backingtest

import (
	"errors"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
)

const testSize = 256 << 10

func filled(name string, caps backing.Capability) *Mem {
	m := NewMem(name, testSize, caps)
	copy(m.Bytes(), pattern(42, testSize))
	return m
}

func TestRun_Mem(t *testing.T) {
	for _, c := range []struct {
		name string
		caps backing.Capability
		ro   bool
	}{{"plain", 0, false}, {"dax", backing.DAX | backing.WPFault, false}, {"readonly", 0, true}, {"readonly-dax", backing.DAX, true}} {
		t.Run(c.name, func(t *testing.T) {
			Run(t, func(t *testing.T) backing.Device {
				m := filled(c.name, c.caps)
				m.SetReadOnly(c.ro)
				return m
			})
		})
	}
}

// Ensure that Faulty without faults is the device it wraps.
func TestRun_FaultyPassesThrough(t *testing.T) {
	Run(t, func(t *testing.T) backing.Device { return NewFaulty(filled("faulty", backing.DAX)) })
}

func TestFaulty_Inject(t *testing.T) {
	mem := filled("m", 0)
	f := NewFaulty(mem)
	buf := make([]byte, 100)
	f.Inject(Fault{Ops: OpRead | OpWrite, Off: 4096, Len: 4096})
	for _, c := range []struct {
		off  int64
		fail bool
	}{{0, false}, {3996, false}, {3997, true}, {4096, true}, {8191, true}, {8192, false}} {
		_, rerr := f.ReadAt(buf, c.off)
		_, werr := f.WriteAt(buf, c.off)
		for _, err := range []error{rerr, werr} {
			if c.fail != errors.Is(err, syscall.EIO) {
				t.Errorf("I/O of 100 bytes at %d with a fault on 4096+4096: got %v, want failure %v", c.off, err, c.fail)
			}
		}
	}
	if f.Injected() != 6 {
		t.Errorf("Injected = %d, want 6", f.Injected())
	}
	// The failed writes must not have reached the device.
	if got := mem.Bytes()[4200]; got != pattern(42, testSize)[4200] {
		t.Errorf("a failed write changed the device: byte 4200 is %#x", got)
	}
	if err := f.Discard(4096, 10); err != nil {
		t.Errorf("Discard is not in the fault's Ops but failed: %v", err)
	}
	f.Heal()
	if _, err := f.ReadAt(buf, 4096); err != nil {
		t.Errorf("ReadAt after Heal: %v", err)
	}
}

func TestFaulty_TimesAndFlush(t *testing.T) {
	f := NewFaulty(filled("m", backing.DAX))
	f.Inject(Fault{Ops: OpFlush | OpWriteZeroes, Times: 2})
	if err := f.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("first Flush: %v, want EIO", err)
	}
	if err := f.WriteZeroes(testSize-1, 1); !errors.Is(err, syscall.EIO) {
		t.Fatalf("WriteZeroes at the end with Len 0 (to the end): %v, want EIO", err)
	}
	if err := f.FlushRange(0, 1); err != nil {
		t.Fatalf("third operation after a fault of Times 2: %v, want success", err)
	}
	if _, err := f.DirectAccess(0, 1); err != nil {
		t.Fatalf("DirectAccess through Faulty: %v", err)
	}
	if _, err := NewFaulty(NewMem("p", 10, 0)).DirectAccess(0, 1); err == nil {
		t.Fatal("DirectAccess through Faulty on a device without DAX succeeded")
	}
}

// Broken devices, each wrong in one way the suite must notice.
type (
	lazyZeroes struct{ *Mem } // WriteZeroes does nothing
	noBounds   struct{ *Mem } // Discard accepts any range
	immortal   struct{ *Mem } // works after Close, without being a Mem
	fakeRO     struct{ *Mem } // says read-only, writes anyway
	copyingDAX struct{ *Mem } // DirectAccess returns a copy
)

func (lazyZeroes) WriteZeroes(off, n int64) error { return nil }
func (noBounds) Discard(off, n int64) error       { return nil }
func (fakeRO) ReadOnly() bool                     { return true }
func (d copyingDAX) DirectAccess(off, n int64) ([]byte, error) {
	b, err := d.Mem.DirectAccess(off, n)
	return append([]byte(nil), b...), err
}

func TestSuite_detectsBrokenDevices(t *testing.T) {
	model := func(dev backing.Device) error {
		m, err := newModel(dev)
		if err != nil {
			return err
		}
		for _, o := range []op{{kind: opWrite, off: 10, n: 5000, seed: 1}, {kind: opWriteZeroes, off: 100, n: 300}} {
			if err := m.apply(o); err != nil {
				return err
			}
		}
		return m.verify()
	}
	for _, c := range []struct {
		name  string
		check func(backing.Device) error
		dev   backing.Device
	}{
		{"model/lazy WriteZeroes", model, lazyZeroes{filled("z", 0)}},
		{"OutOfRange/no bounds", checkOutOfRange, noBounds{filled("b", 0)}},
		{"Close/immortal", checkClose, immortal{filled("i", 0)}},
		{"ReadOnly/fake", checkReadOnly, fakeRO{filled("r", 0)}},
		{"DirectAccess/copy", checkDirectAccess, copyingDAX{filled("c", backing.DAX)}},
		{"Properties/dax without DirectAccesser", checkProperties, struct{ backing.Device }{filled("p", backing.DAX)}},
	} {
		if err := c.check(c.dev); err == nil {
			t.Errorf("%s: the check passed a broken device", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
}
