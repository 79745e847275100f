package apiclient

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that the checkpoint verbs reach the service with their
// arguments, and their answers and error classes come back.
func TestClient_checkpointVerbs(t *testing.T) {
	f := &fakeService{}
	c := serve(t, f, api.Options{})
	du, err := c.CheckpointEnable(bg, "a/b", wire.CheckpointEnable{Path: "/img", IntervalMS: 1500})
	if err != nil || du.State != wire.DurabilityCheckpointed || du.Path != "/img" {
		t.Fatalf("enable = %+v, %v", du, err)
	}
	if du, err = c.CheckpointNow(bg, "a"); err != nil || du.Last == nil || du.Last.Seq != 3 {
		t.Fatalf("now = %+v, %v", du, err)
	}
	if du, err = c.CheckpointGet(bg, "a"); err != nil || du.Text != wire.DurabilityVolatile {
		t.Fatalf("get = %+v, %v", du, err)
	}
	if err := c.CheckpointDisable(bg, "busy"); !errors.Is(err, dm.ErrBusy) {
		t.Fatalf("disable busy = %v, want ErrBusy", err)
	}
	want := []string{"checkpoint-enable a/b /img 1500", "checkpoint-now a", "checkpoint-get a", "checkpoint-disable busy"}
	if got := f.Calls(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
