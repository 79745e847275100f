package apitest

import (
	"path/filepath"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// checkCheckpoints: a memory volume is volatile until checkpoints are
// enabled; enable, a checkpoint now, the state and disable answer as
// documented, and bad requests are refused with their classes.
func checkCheckpoints(t testing.TB, svc api.Service) {
	ctx := t.Context()
	vol(t, svc, "vol", 4*mib)
	create(t, svc, "z", "0 8 zero")
	du, err := svc.CheckpointGet(ctx, "vol")
	must(t, "checkpoint get vol", err)
	if du.State != wire.DurabilityVolatile || du.Text != "volatile" {
		t.Errorf("a memory volume without checkpoints: %+v, want volatile", du)
	}
	_, err = svc.CheckpointGet(ctx, "z")
	wantCode(t, "checkpoint get of a zero device", err, wire.CodeNotSupported)
	_, err = svc.CheckpointGet(ctx, "nope")
	wantCode(t, "checkpoint get of no device", err, wire.CodeNotFound)

	img := filepath.Join(t.TempDir(), "vol.img")
	_, err = svc.CheckpointEnable(ctx, "vol", wire.CheckpointEnable{Path: "vol.img"})
	wantCode(t, "checkpoint enable to a relative path", err, wire.CodeInvalidArgument)
	_, err = svc.CheckpointEnable(ctx, "z", wire.CheckpointEnable{Path: img})
	wantCode(t, "checkpoint enable of a zero device", err, wire.CodeNotSupported)
	_, err = svc.CheckpointNow(ctx, "vol")
	wantCode(t, "checkpoint of a volume not checkpointed", err, wire.CodeInvalidArgument)

	du, err = svc.CheckpointEnable(ctx, "vol", wire.CheckpointEnable{Path: img, IntervalMS: 3600_000})
	must(t, "checkpoint enable vol", err)
	if du.State != wire.DurabilityCheckpointed || du.Path != img || du.Journal != img+".journal" || du.IntervalMS != 3600_000 {
		t.Errorf("checkpoint enable answered %+v", du)
	}
	if again, err := svc.CheckpointEnable(ctx, "vol", wire.CheckpointEnable{Path: img, IntervalMS: 3600_000}); err != nil || again.Path != img || again.IntervalMS != 3600_000 {
		t.Errorf("checkpoint enable again with the same settings = %+v, %v; want it answered as enabled already", again, err)
	}
	_, err = svc.CheckpointEnable(ctx, "vol", wire.CheckpointEnable{Path: img, IntervalMS: 1000})
	wantCode(t, "checkpoint enable with other settings", err, wire.CodeExists)
	must(t, "write vol", svc.WriteData(ctx, "vol", mib, pattern(3, mib)))
	du, err = svc.CheckpointNow(ctx, "vol")
	must(t, "checkpoint vol", err)
	// The first checkpoint of a new image writes every chunk but those
	// of zeroes (the image reads as zeroes already).
	if du.Last == nil || du.Last.Seq != 1 || du.Last.Bytes != mib || du.Written != mib {
		t.Errorf("the first checkpoint: %+v, want seq 1 writing the 1 MiB written", du)
	}
	in, err := svc.Info(ctx, "vol")
	must(t, "info vol", err)
	if in.Durability == nil || in.Durability.Last == nil || in.Durability.Last.Seq != 1 {
		t.Errorf("info of a checkpointed volume: durability %+v", in.Durability)
	}
	must(t, "checkpoint disable vol", svc.CheckpointDisable(ctx, "vol"))
	err = svc.CheckpointDisable(ctx, "vol")
	wantCode(t, "checkpoint disable of a volume not checkpointed", err, wire.CodeInvalidArgument)
	if du, err := svc.CheckpointGet(ctx, "vol"); err != nil || du.State != wire.DurabilityVolatile {
		t.Errorf("after disable: %+v, %v; want volatile", du, err)
	}
}
