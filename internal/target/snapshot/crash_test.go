package snapshot_test

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore/storetest"
	"github.com/daxsnap/daxsnap/internal/target/all"
)

var crashIterations = flag.Int("crash-iterations", 60, "power-loss points TestSnapshot_powerLoss tries")

// crashManager resolves "orig" and "cow0" to the given devices (clones
// carry other names).
func crashManager(orig, cow *storetest.CrashDev) *dm.Manager {
	byName := map[string]backing.Device{"orig": orig, "cow0": cow}
	reg := dm.NewRegistry()
	all.Register(reg)
	return dm.NewManager(reg, dm.NewDevicePool(func(name string, _ backing.Options) (backing.Device, error) {
		if d, ok := byName[name]; ok {
			return d, nil
		}
		return nil, fmt.Errorf("open %s: no such file or directory", name)
	}))
}

// TestSnapshot_powerLoss cuts power at a random device operation during
// heavy origin writes (inside copy-outs and commits, between origin
// writes) and brings a persistent snapshot back from what the media kept:
// it must equal the origin at snapshot time, and every origin write
// completed before the last FLUSH must be on the origin.
func TestSnapshot_powerLoss(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (iterations: -crash-iterations)", seed)
	for it := range *crashIterations {
		rng := rand.New(rand.NewPCG(seed, uint64(it)))
		powerLossOnce(t, rng, it)
	}
}

func powerLossOnce(t *testing.T, rng *rand.Rand, it int) {
	orig := storetest.NewCrashDev("orig", originBytes)
	cow := storetest.NewCrashDev("cow0", cowBytes)
	initial := make([]byte, originBytes)
	for i := range initial {
		initial[i] = byte(rng.Uint32())
	}
	orig.SetContents(initial)
	m := crashManager(orig, cow)
	vol, err := m.Create("vol", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot-origin orig", sectors)})
	must(t, err)
	must(t, vol.Suspend(dm.SuspendOptions{}))
	_, err = m.Create("s0", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot orig cow0 P 8", sectors)})
	must(t, err)
	must(t, vol.Resume())

	// Crash at the k-th device operation from now on.
	k, ops := 1+rng.Int64N(400), int64(0)
	model := bytes.Clone(initial)
	flushed := bytes.Clone(initial)        // origin as of the last completed flush
	dirty := make([]bool, originBytes/512) // sectors written since that flush
	var origClone, cowClone *storetest.CrashDev
	var dirtyAtCrash []bool
	var flushedAtCrash []byte
	hook := func() {
		ops++
		if ops == k {
			origClone, cowClone = orig.CrashClone(rng), cow.CrashClone(rng)
			dirtyAtCrash, flushedAtCrash = append([]bool(nil), dirty...), bytes.Clone(flushed)
		}
	}
	orig.SetHook(hook)
	cow.SetHook(hook)
	for origClone == nil {
		if rng.IntN(8) == 0 {
			must(t, vol.Flush())
			copy(flushed, model)
			clear(dirty)
			continue
		}
		off := rng.Int64N(originBytes/512) * 512
		n := min(originBytes-off, (1+rng.Int64N(24))*512)
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		_, err := vol.WriteAt(p, off)
		must(t, err)
		copy(model[off:], p)
		for s := off / 512; s < (off+n)/512; s++ {
			dirty[s] = true
		}
	}
	orig.SetHook(nil)
	cow.SetHook(nil)

	// Power back on: the snapshot reloads from the crashed COW.
	m2 := crashManager(origClone, cowClone)
	s, err := m2.Create("s0", dm.CreateOptions{Table: fmt.Sprintf("0 %d snapshot orig cow0 P 8", sectors)})
	if err != nil {
		t.Fatalf("iteration %d (crash at op %d): snapshot does not load after the crash: %v", it, k, err)
	}
	if st := status(t, s); st == "0 512 snapshot Invalid" {
		t.Fatalf("iteration %d: snapshot invalid after a crash", it)
	}
	if got := read(t, s, 0, originBytes); !bytes.Equal(got, initial) {
		t.Fatalf("iteration %d (crash at op %d): snapshot differs from the origin at snapshot time", it, k)
	}
	crashed := make([]byte, originBytes)
	_, err = origClone.ReadAt(crashed, 0)
	must(t, err)
	for sec, d := range dirtyAtCrash {
		o := int64(sec) * 512
		if !d && !bytes.Equal(crashed[o:o+512], flushedAtCrash[o:o+512]) {
			t.Fatalf("iteration %d: sector %d written before the last FLUSH is not on the origin after the crash", it, sec)
		}
	}
}
