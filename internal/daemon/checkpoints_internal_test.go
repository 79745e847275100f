package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// barrierEngine's Close returns once every engine of the test is in its
// Close, or after a minute.
type barrierEngine struct {
	in  chan struct{}
	all chan struct{}
}

func (e barrierEngine) Checkpoint(context.Context) (wire.CheckpointInfo, error) {
	return wire.CheckpointInfo{}, nil
}
func (e barrierEngine) Persist(context.Context) error { return nil }
func (e barrierEngine) Status() ckStatus              { return ckStatus{} }
func (e barrierEngine) Close() error {
	e.in <- struct{}{}
	select {
	case <-e.all:
	case <-time.After(time.Minute):
	}
	return nil
}

// Ensure that a daemon's stop closes the checkpoint engines of its
// volumes together: each may wait up to a minute for a hung image, and
// one after the other a stop with a few volumes on a hung disk took
// minutes.
func TestCheckpoints_closeAllTogether(t *testing.T) {
	const n = 3
	in, all := make(chan struct{}, n), make(chan struct{})
	c := &checkpoints{cancel: func() {}, m: map[*dm.Device]*ckVolume{}}
	for range n {
		c.m[new(dm.Device)] = &ckVolume{eng: barrierEngine{in: in, all: all}}
	}
	done := make(chan error, 1)
	go func() { done <- c.closeAll() }()
	for i := range n {
		select {
		case <-in:
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d engines were closing after 30 s: closeAll closes them one at a time", i, n)
		}
	}
	close(all)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
