package zero_test

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/dm/targettest"
	"github.com/daxsnap/daxsnap/internal/target/zero"
)

func TestZero_conformance(t *testing.T) {
	targettest.Run(t, targettest.Case{
		Type:  zero.Type,
		Len:   64,
		Model: targettest.ZeroModel(),
		CtorErrors: []targettest.CtorError{
			{Name: "one-arg", Args: []string{"x"}, Want: `takes no arguments, got 1 ("x")`},
			{Name: "two-args", Args: []string{"/dev/pmem0", "0"}, Want: `takes no arguments, got 2 ("/dev/pmem0 0")`},
		},
	})
}

func TestZero_Type(t *testing.T) {
	if zero.Type.Name != "zero" || zero.Type.Version != [3]int{1, 2, 0} {
		t.Errorf("Type = %s v%v, want zero v[1 2 0] (dm-zero.c)", zero.Type.Name, zero.Type.Version)
	}
}

// TestZero_noDirectAccess: with no memory behind it, zero must make its
// table DAX-incapable, which the core derives from the missing method.
func TestZero_noDirectAccess(t *testing.T) {
	tgt, err := zero.Type.New(dm.NewCtorContext(dm.NewDevicePool(nil), "vol", 0, 8, dm.ReadWrite), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tgt.(dm.DirectAccesser); ok {
		t.Errorf("zero implements DirectAccess")
	}
}

func TestZero_ReadAt_overwritesBuffer(t *testing.T) {
	tgt, err := zero.Type.New(dm.NewCtorContext(dm.NewDevicePool(nil), "vol", 0, 8, dm.ReadWrite), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := []byte{1, 2, 3, 4}
	if _, err := tgt.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := tgt.ReadAt(p, 0); err != nil || n != 4 || p[0]|p[1]|p[2]|p[3] != 0 {
		t.Errorf("ReadAt = %d, %v, %v; want 4 zero bytes", n, err, p)
	}
}
