package daemon

import (
	"context"
	"strings"
	"time"

	"github.com/daxsnap/daxsnap/internal/backup"
	"github.com/daxsnap/daxsnap/internal/checkpoint"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Checkpoints to an object store (docs/checkpoint.md, "Checkpoints to
// S3"): `checkpoint enable VOL --to s3://BUCKET/PREFIX` writes them
// through internal/backup's Checkpoints, which is the volume's image
// (ckImage) for a restore and the engine's checkpoint.Sink.

// isS3 says whether cfg's image is in an object store.
func isS3(path string) bool { return strings.HasPrefix(path, "s3://") }

// s3Image is a volume's checkpoints in an object store as a ckImage.
type s3Image struct{ c *backup.Checkpoints }

// openS3 opens the checkpoints of cfg; with create, for a volume of size
// bytes in chunks of chunk bytes when there is none yet.
func openS3(cfg state.Checkpoint, size, chunk int64, create bool) (ckImage, error) {
	loc, err := backup.ParseURL(cfg.Path)
	if err != nil {
		return nil, errorf(dm.ErrInvalidArgument, "%v", err)
	}
	st, err := backup.Open(loc, backup.Config{Endpoint: cfg.Endpoint})
	if err != nil {
		return nil, errorf(dm.ErrInvalidArgument, "%v", err)
	}
	c, err := st.OpenCheckpoints(context.Background(), cfg.Volume, size, chunk, create)
	if err != nil {
		return nil, err
	}
	return s3Image{c}, nil
}

func (im s3Image) Last() (wire.CheckpointInfo, bool) {
	l := im.c.Last()
	return wire.CheckpointInfo{Seq: l.Seq, Time: l.Time, Bytes: l.Bytes, Chunks: l.Chunks}, l.Seq != 0
}

func (im s3Image) Size() int64                             { return im.c.Size() }
func (im s3Image) ReadAt(p []byte, off int64) (int, error) { return im.c.ReadAt(p, off) }
func (im s3Image) Close() error                            { return im.c.Close() }

// s3Sink is the checkpoints as the engine's destination.
type s3Sink struct{ c *backup.Checkpoints }

var _ checkpoint.Sink = s3Sink{}

func (s s3Sink) Size() int64  { return s.c.Size() }
func (s s3Sink) Chunk() int64 { return s.c.Chunk() }
func (s s3Sink) Last() image.Checkpoint {
	return cpOf(s.c.Last())
}

func (s s3Sink) Begin(seq uint64) (checkpoint.Txn, error) {
	t, err := s.c.Begin(seq)
	if err != nil {
		return nil, err
	}
	return s3Txn{t}, nil
}

type s3Txn struct{ *backup.CheckpointTxn }

func (t s3Txn) Commit(at time.Time) (image.Checkpoint, error) {
	cp, err := t.CheckpointTxn.Commit(at)
	return cpOf(cp), err
}

func cpOf(l backup.CheckpointState) image.Checkpoint {
	return image.Checkpoint{Seq: l.Seq, Time: l.Time, Bytes: l.Bytes, Chunks: l.Chunks}
}

// checkEnableS3 is checkEnable for an s3:// destination.
func checkEnableS3(name string, req wire.CheckpointEnable) (state.Checkpoint, error) {
	op := "checkpoint enable " + name
	loc, err := backup.ParseURL(req.Path)
	if err != nil {
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: %v", op, err)
	}
	if req.Journal != "" {
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: --journal %s: checkpoints to an object store have no journal (each is a manifest stored whole or not at all)", op, req.Journal)
	}
	if _, err := backup.Open(loc, backup.Config{Endpoint: req.Endpoint}); err != nil {
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: %v", op, err)
	}
	return state.Checkpoint{Path: loc.String(), Endpoint: req.Endpoint, Volume: name, IntervalMS: req.IntervalMS, BufferBytes: req.BufferBytes}, nil
}
