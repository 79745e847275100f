package dm_test

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// The dm tests use their own small targets so that the core is tested
// without the real ones: `fake <dev> <offset> [nodax]` maps like linear;
// `nodax` leaves out direct access. Hooks count suspend/resume calls.

type fakeTarget struct {
	dev    *dm.DeviceRef
	offset dm.Sector
	args   []string
	hooks  *hookCounts
	ctx    *dm.CtorContext
	// prepared records PrepareWrite calls as "off+n".
	prepared []string
}

type fakeDAXTarget struct{ *fakeTarget }

type hookCounts struct {
	presuspend, postsuspend, preresume, resume, closes atomic.Int64
	refuseResume                                       atomic.Bool
}

var hooks = &hookCounts{}

var fakeType = &dm.TargetType{Name: "fake", Version: [3]int{1, 0, 0}, New: newFake}

func newFake(ctx *dm.CtorContext, args []string) (dm.Target, error) {
	if len(args) < 2 || len(args) > 3 {
		return nil, fmt.Errorf("want <dev> <offset> [nodax], got %d arguments", len(args))
	}
	off, err := dm.ParseSector(args[1])
	if err != nil {
		return nil, fmt.Errorf("invalid offset: %v", err)
	}
	dev, err := ctx.OpenDevice(args[0], off, ctx.Len)
	if err != nil {
		return nil, err
	}
	t := &fakeTarget{dev: dev, offset: off, args: args, hooks: hooks, ctx: ctx}
	if len(args) == 3 {
		if args[2] != "nodax" {
			return nil, fmt.Errorf("unknown flag %q", args[2])
		}
		return t, nil
	}
	return fakeDAXTarget{t}, nil
}

func (t *fakeTarget) ReadAt(p []byte, off int64) (int, error) {
	return t.dev.ReadAt(p, off+t.offset.Bytes())
}
func (t *fakeTarget) WriteAt(p []byte, off int64) (int, error) {
	return t.dev.WriteAt(p, off+t.offset.Bytes())
}
func (t *fakeTarget) Flush() error               { return t.dev.Flush() }
func (t *fakeTarget) Discard(off, n int64) error { return t.dev.Discard(off+t.offset.Bytes(), n) }
func (t *fakeTarget) WriteZeroes(off, n int64) error {
	return t.dev.WriteZeroes(off+t.offset.Bytes(), n)
}
func (t *fakeTarget) Close() error { t.hooks.closes.Add(1); return nil }
func (t *fakeTarget) Status(kind dm.StatusType) string {
	if kind == dm.StatusInfo {
		return ""
	}
	return strings.Join(append([]string{t.dev.TableName()}, t.args[1:]...), " ")
}
func (t *fakeTarget) PreSuspend()  { t.hooks.presuspend.Add(1) }
func (t *fakeTarget) PostSuspend() { t.hooks.postsuspend.Add(1) }
func (t *fakeTarget) PreResume() error {
	t.hooks.preresume.Add(1)
	if t.hooks.refuseResume.Load() {
		return fmt.Errorf("refused by test")
	}
	return nil
}
func (t *fakeTarget) Resume() { t.hooks.resume.Add(1) }
func (t *fakeTarget) Message(args []string) (string, error) {
	switch args[0] {
	case "ping":
		return "pong " + t.dev.Name, nil
	case "event":
		t.ctx.TriggerEvent()
		return "", nil
	case "prepared":
		return strings.Join(t.prepared, " "), nil
	}
	return "", fmt.Errorf("%w: unknown message %q", dm.ErrInvalidArgument, args[0])
}

func (t fakeDAXTarget) DirectAccess(off, n int64) ([]byte, error) {
	da, ok := t.dev.Device.(backing.DirectAccesser)
	if !ok {
		return nil, fmt.Errorf("%s has no direct access", t.dev.Name)
	}
	return da.DirectAccess(off+t.offset.Bytes(), n)
}

// failType stands in for the error target: no devices, direct access that fails.
var failType = &dm.TargetType{Name: "error", Version: [3]int{1, 0, 0}, New: func(ctx *dm.CtorContext, args []string) (dm.Target, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("takes no arguments")
	}
	return failTarget{}, nil
}}

type failTarget struct{}

func (failTarget) ReadAt([]byte, int64) (int, error)         { return 0, dm.ErrIO }
func (failTarget) WriteAt([]byte, int64) (int, error)        { return 0, dm.ErrIO }
func (failTarget) Flush() error                              { return dm.ErrIO }
func (failTarget) Discard(int64, int64) error                { return dm.ErrIO }
func (failTarget) WriteZeroes(int64, int64) error            { return dm.ErrIO }
func (failTarget) Close() error                              { return nil }
func (failTarget) Status(dm.StatusType) string               { return "" }
func (failTarget) DirectAccess(int64, int64) ([]byte, error) { return nil, dm.ErrIO }

func (t *fakeTarget) PrepareWrite(off, n int64) error {
	t.prepared = append(t.prepared, fmt.Sprintf("%d+%d", off, n))
	return nil
}

// PrepareWrites records one batch as "[off+n off+n ...]".
func (t *fakeTarget) PrepareWrites(rs []dm.Range) error {
	var b []string
	for _, r := range rs {
		b = append(b, fmt.Sprintf("%d+%d", r.Off, r.Len))
	}
	t.prepared = append(t.prepared, "["+strings.Join(b, " ")+"]")
	return nil
}
