package daemon

import (
	"context"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/wire"
)

var _ api.Differ = snapshotService{}

// SnapshotDiff answers which chunks changed between two snapshots of one
// origin, or since a snapshot on the live origin (changed-block tracking,
// internal/snapshots' track.go).
func (s snapshotService) SnapshotDiff(ctx context.Context, req wire.SnapshotDiffRequest) (wire.SnapshotDiff, error) {
	return s.snaps.SnapshotDiff(req)
}
