package errortarget_test

import (
	"errors"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/dm/targettest"
	errortarget "github.com/daxsnap/daxsnap/internal/target/error"
)

func TestError_conformance(t *testing.T) {
	targettest.Run(t, targettest.Case{
		Type:  errortarget.Type,
		Len:   64,
		Model: targettest.ErrorModel(),
		CtorErrors: []targettest.CtorError{
			{Name: "one-arg", Args: []string{"x"}, Want: `takes no arguments, got 1 ("x")`},
			{Name: "two-args", Args: []string{"/dev/pmem0", "0"}, Want: `takes no arguments, got 2 ("/dev/pmem0 0")`},
		},
	})
}

func TestError_Type(t *testing.T) {
	if errortarget.Type.Name != "error" || errortarget.Type.Version != [3]int{1, 7, 0} {
		t.Errorf("Type = %s v%v, want error v[1 7 0] (dm-target.c)", errortarget.Type.Name, errortarget.Type.Version)
	}
}

func TestError_everyOperationFails(t *testing.T) {
	tgt, err := errortarget.Type.New(dm.NewCtorContext(dm.NewDevicePool(nil), "vol", 0, 8, dm.ReadWrite), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 512)
	n, rerr := tgt.ReadAt(p, 0)
	_, werr := tgt.WriteAt(p, 0)
	_, derr := tgt.(dm.DirectAccesser).DirectAccess(0, 4096)
	for name, err := range map[string]error{
		"ReadAt":       rerr,
		"WriteAt":      werr,
		"Discard":      tgt.Discard(0, 512),
		"WriteZeroes":  tgt.WriteZeroes(0, 512),
		"DirectAccess": derr,
	} {
		if !errors.Is(err, dm.ErrIO) {
			t.Errorf("%s = %v, want an error wrapping %v", name, err, dm.ErrIO)
		}
	}
	if n != 0 {
		t.Errorf("ReadAt returned %d bytes", n)
	}
	// The kernel sends no flush to the error target; failing it would make
	// every suspend of a device holding an error line fail.
	if err := tgt.Flush(); err != nil {
		t.Errorf("Flush = %v, want nil", err)
	}
}
