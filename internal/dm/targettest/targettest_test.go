package targettest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/dm/targettest"
)

// shifted is a linear-like target whose block I/O and direct access land
// skew sectors past where its table says, while its status is right: the
// off-by-one bug the suite must catch.
type shifted struct {
	dev    *dm.DeviceRef
	offset dm.Sector
	skew   int64
}

func shiftedType(skew int64) *dm.TargetType {
	return &dm.TargetType{Name: "shifted", Version: [3]int{1, 0, 0}, New: func(ctx *dm.CtorContext, args []string) (dm.Target, error) {
		if len(args) != 2 {
			return nil, fmt.Errorf("want <dev> <offset>, got %d arguments", len(args))
		}
		off, err := dm.ParseSector(args[1])
		if err != nil {
			return nil, fmt.Errorf("invalid offset: %v", err)
		}
		dev, err := ctx.OpenDevice(args[0], off, ctx.Len)
		if err != nil {
			return nil, err
		}
		return &shifted{dev: dev, offset: off, skew: skew}, nil
	}}
}

func (s *shifted) at(off int64) int64 { return s.offset.Bytes() + off + s.skew*dm.SectorSize }

func (s *shifted) ReadAt(p []byte, off int64) (int, error)  { return s.dev.ReadAt(p, s.at(off)) }
func (s *shifted) WriteAt(p []byte, off int64) (int, error) { return s.dev.WriteAt(p, s.at(off)) }
func (s *shifted) Flush() error                             { return s.dev.Flush() }
func (s *shifted) Discard(off, n int64) error               { return s.dev.Discard(s.at(off), n) }
func (s *shifted) WriteZeroes(off, n int64) error           { return s.dev.WriteZeroes(s.at(off), n) }
func (s *shifted) Close() error                             { return nil }

func (s *shifted) DirectAccess(off, n int64) ([]byte, error) {
	return s.dev.Device.(backing.DirectAccesser).DirectAccess(s.at(off), n)
}

func (s *shifted) Status(kind dm.StatusType) string {
	if kind == dm.StatusTable {
		return fmt.Sprintf("%s %d", s.dev.Name, s.offset)
	}
	return ""
}

func shiftedCase(skew int64) targettest.Case {
	return targettest.Case{
		Type:    shiftedType(skew),
		Devices: []targettest.Device{{Name: "/dev/mem0", Size: 64 * dm.SectorSize, Caps: backing.DAX}},
		Len:     32,
		Args:    []string{"/dev/mem0", "16"},
		Model:   targettest.LinearModel(0, 16),
		Table:   "/dev/mem0 16",
		CtorErrors: []targettest.CtorError{
			{Name: "no-args", Args: nil, Want: "want <dev> <offset>"},
		},
	}
}

func record(c targettest.Case) *targettest.Recording {
	return targettest.Record(func(tb targettest.TB) { targettest.Check(tb, c) })
}

// TestCheck_catchesOffByOne runs the suite through the recorder on a
// correct and on an off-by-one-sector linear: the first must pass (so the
// recorder and the case are sound), the second must fail in the model.
func TestCheck_catchesOffByOne(t *testing.T) {
	t.Chdir(t.TempDir()) // rapid writes fail files under ./testdata
	if r := record(shiftedCase(0)); r.Failed() {
		t.Fatalf("the suite fails a correct target:\n%s", r.Logs())
	}
	r := record(shiftedCase(1))
	if !r.Failed() {
		t.Fatalf("the suite passes a target that maps one sector off")
	}
	logs := r.Logs()
	if !strings.Contains(logs, "the model says") && !strings.Contains(logs, "differs from the model") {
		t.Errorf("the suite failed, but not on a model mismatch:\n%s", logs)
	}
	if testing.Verbose() {
		t.Logf("recorded:\n%s", logs)
	}
}

// TestCheck_catchesBadStatus shows the status check fails on wrong text.
func TestCheck_catchesBadStatus(t *testing.T) {
	t.Chdir(t.TempDir())
	c := shiftedCase(0)
	c.Table = "/dev/mem0 17"
	if r := record(c); !r.Failed() {
		t.Fatalf("the suite passes a target whose table text is not the expected one")
	}
}

// TestCheck_catchesAcceptedBadArgs shows a listed constructor error that
// the target accepts fails the suite.
func TestCheck_catchesAcceptedBadArgs(t *testing.T) {
	t.Chdir(t.TempDir())
	c := shiftedCase(0)
	c.CtorErrors = []targettest.CtorError{{Name: "accepted", Args: []string{"/dev/mem0", "0"}, Want: "anything"}}
	if r := record(c); !r.Failed() {
		t.Fatalf("the suite passes a target that accepts arguments listed as an error")
	}
}
