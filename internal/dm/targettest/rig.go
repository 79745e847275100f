package targettest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/backing/backingtest"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// rig is one run's devices, filled with random bytes, the model's copies
// of them, and the pool that opens them.
type rig struct {
	mems   []*backingtest.Mem
	imgs   [][]byte
	pool   *dm.DevicePool
	opened map[backing.Device]bool
}

func newRig(devs []Device, seed uint64) *rig {
	r := &rig{opened: make(map[backing.Device]bool)}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for _, d := range devs {
		m := backingtest.NewMem(d.Name, d.Size, d.Caps)
		if !d.Zeroed {
			fill(rng, m.Bytes())
		}
		r.mems = append(r.mems, m)
		r.imgs = append(r.imgs, bytes.Clone(m.Bytes()))
	}
	r.pool = dm.NewDevicePool(backingtest.Opener(r.mems...))
	return r
}

func fill(rng *rand.Rand, p []byte) {
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
}

// compare fails tb unless every device holds what the model says.
func (r *rig) compare(tb TB) {
	tb.Helper()
	for i, m := range r.mems {
		if j := firstDiff(m.Bytes(), r.imgs[i]); j >= 0 {
			tb.Fatalf("device %s differs from the model at byte %d (sector %d): device has %#02x, model %#02x",
				m.Path(), j, j/dm.SectorSize, m.Bytes()[j], r.imgs[i][j])
		}
	}
}

// released fails tb unless every device went back to the pool and the
// pool closed each one a target had opened.
func (r *rig) released(tb TB) {
	tb.Helper()
	if n := r.pool.Len(); n != 0 {
		tb.Errorf("%d device(s) still open in the pool after Close and Release", n)
	}
	for _, m := range r.mems {
		if r.opened[m] && m.Closes.Load() == 0 {
			tb.Errorf("device %s was opened but never closed", m.Path())
		}
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// openTarget constructs c's target with args over r's devices.
func openTarget(tb TB, c Case, r *rig, args []string, length dm.Sector) (dm.Target, *dm.CtorContext) {
	tb.Helper()
	ctx := dm.NewCtorContext(r.pool, "targettest", 0, length, dm.ReadWrite)
	t, err, _ := construct(c.Type, ctx, args)
	if err != nil {
		ctx.Release()
		tb.Fatalf("%s with args %q, length %d: %v", c.Type.Name, args, length, err)
	}
	return t, ctx
}

// closeTarget closes t twice (the second must not panic; its result is
// the target's business) and releases ctx's devices, as the core does.
func closeTarget(tb TB, r *rig, t dm.Target, ctx *dm.CtorContext) {
	tb.Helper()
	if err := t.Close(); err != nil {
		tb.Errorf("Close: %v", err)
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				tb.Errorf("second Close panicked: %v", p)
			}
		}()
		_ = t.Close()
	}()
	for _, d := range ctx.Devices() {
		r.opened[d.Device] = true
	}
	ctx.Release()
}

func tableLine(c Case) string {
	return strings.TrimSpace(fmt.Sprintf("0 %d %s %s", c.Len, c.Type.Name, strings.Join(c.Args, " ")))
}
