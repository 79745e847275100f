package snapshot_test

import (
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/dm/targettest"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
)

// viewsCase is an origin of 16 chunks of 4 KiB on a device with direct
// access and write-protect faults (so the origin is DAX-capable)
// and a snapshot of it with store type store, on a fresh COW device large
// enough for every chunk and its metadata.
func viewsCase(store exstore.StoreType, origin, snap *dm.TargetType) targettest.SnapshotCase {
	const size = 64 << 10
	sectors := size / dm.SectorSize
	return targettest.SnapshotCase{
		Types: []*dm.TargetType{origin, snap},
		Devices: []targettest.Device{
			{Name: "/dev/orig", Size: size, Caps: backing.DAX | backing.WPFault},
			{Name: "/dev/cow", Size: 2 * size, Zeroed: true},
		},
		Origin:   fmt.Sprintf("0 %d snapshot-origin /dev/orig", sectors),
		Snapshot: fmt.Sprintf("0 %d snapshot /dev/orig /dev/cow %s 8", sectors, store),
		Reload:   store != exstore.Transient,
	}
}

// TestSnapshot_conformance runs the two-view suite on snapshot-origin and
// snapshot, with each store type.
func TestSnapshot_conformance(t *testing.T) {
	for _, store := range []exstore.StoreType{exstore.Persistent, exstore.PersistentOverflow, exstore.Transient} {
		t.Run(store.String(), func(t *testing.T) {
			targettest.RunSnapshot(t, viewsCase(store, snapshot.OriginType, snapshot.SnapshotType))
		})
	}
}

// TestSnapshot_conformance_catchesBrokenViews runs the suite through a
// recording on two broken variants, a snapshot that reads through to the
// origin and an origin that writes without copying the chunk out first:
// each must fail on a snapshot read that the model says differs.
func TestSnapshot_conformance_catchesBrokenViews(t *testing.T) {
	t.Chdir(t.TempDir()) // rapid writes fail files under ./testdata
	// A failure is all this test needs; a minimal one is not worth rapid's
	// default 30 s of shrinking. No test of this package runs in parallel.
	shrink := flag.Lookup("rapid.shrinktime")
	was := shrink.Value.String()
	shrink.Value.Set("1s")
	t.Cleanup(func() { shrink.Value.Set(was) })
	for name, c := range map[string]targettest.SnapshotCase{
		"reads-through": viewsCase(exstore.Persistent, snapshot.OriginType, readsThroughType),
		"skips-copy":    viewsCase(exstore.Transient, skipsCopyType, snapshot.SnapshotType),
	} {
		t.Run(name, func(t *testing.T) {
			r := targettest.Record(func(tb targettest.TB) { targettest.RunSnapshot(tb, c) })
			if !r.Failed() {
				t.Fatalf("the suite passes a broken %s", name)
			}
			if logs := r.Logs(); !strings.Contains(logs, "the snapshot read through to a changed origin, or the origin's write skipped copying") {
				t.Errorf("the suite failed, but not on a snapshot read of the origin's new data:\n%s", logs)
			}
		})
	}
}

// snapTarget is what the snapshot target implements.
type snapTarget interface {
	dm.Target
	dm.Resumer
	dm.Suspender
	dm.Messager
	dm.ActivationCutter
}

// readsThrough is a snapshot whose reads go to the origin device.
type readsThrough struct {
	snapTarget
	origin *dm.DeviceRef
}

func (r *readsThrough) ReadAt(p []byte, off int64) (int, error) { return r.origin.ReadAt(p, off) }

var readsThroughType = broken(snapshot.SnapshotType, func(t dm.Target, origin *dm.DeviceRef) dm.Target {
	return &readsThrough{snapTarget: t.(snapTarget), origin: origin}
})

// originTarget is what the snapshot-origin target implements.
type originTarget interface {
	dm.Target
	dm.DirectAccesser
	dm.Capabler
	dm.WritePreparer
	dm.Remapper
	dm.WriteGranularizer
}

// skipsCopy is an origin whose writes, and the stores PrepareWrite
// announces, reach its device without copying the chunk out first.
type skipsCopy struct {
	originTarget
	dev *dm.DeviceRef
}

func (s *skipsCopy) WriteAt(p []byte, off int64) (int, error) { return s.dev.WriteAt(p, off) }
func (s *skipsCopy) WriteZeroes(off, n int64) error           { return s.dev.WriteZeroes(off, n) }
func (s *skipsCopy) Discard(off, n int64) error               { return s.dev.Discard(off, n) }
func (s *skipsCopy) PrepareWrite(off, n int64) error          { return nil }

var skipsCopyType = broken(snapshot.OriginType, func(t dm.Target, dev *dm.DeviceRef) dm.Target {
	return &skipsCopy{originTarget: t.(originTarget), dev: dev}
})

// broken is typ with its targets wrapped by wrap, which also gets the
// device the line names first (the origin's) to reach behind the target.
func broken(typ *dm.TargetType, wrap func(dm.Target, *dm.DeviceRef) dm.Target) *dm.TargetType {
	return &dm.TargetType{Name: typ.Name, Version: typ.Version, New: func(ctx *dm.CtorContext, args []string) (dm.Target, error) {
		t, err := typ.New(ctx, args)
		if err != nil {
			return nil, err
		}
		dev, err := ctx.OpenDevice(args[0], 0, ctx.Len)
		if err != nil {
			t.Close()
			return nil, err
		}
		return wrap(t, dev), nil
	}}
}
