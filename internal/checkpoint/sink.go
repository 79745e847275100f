package checkpoint

import (
	"time"

	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
)

// Sink is where a Volume writes its checkpoints: all the engine needs of
// a destination. An *image.Image is one (Config.Image); an object store
// is another (Config.Sink, internal/backup's checkpoints).
type Sink interface {
	// Size and Chunk are the volume's bytes and the unit of write-back.
	Size() int64
	Chunk() int64
	// Last is the newest complete checkpoint (Seq 0: none yet).
	Last() image.Checkpoint
	// Begin starts checkpoint seq, which is Last().Seq+1.
	Begin(seq uint64) (Txn, error)
}

// Txn is one checkpoint being written, with image.Txn's contract: Put
// each changed chunk once (data not retained), Buffer gives room a chunk
// may be read into so that Put copies nothing, and Commit makes the
// checkpoint durable, or fails and leaves Last() as it was. Commit may
// return image.ErrNotApplied with the checkpoint: it is durable.
type Txn interface {
	Buffer(n int64) ([]byte, error)
	Put(chunk int64, data []byte) error
	Commit(at time.Time) (image.Checkpoint, error)
	Abort() error
}

// imageSink is an *image.Image as a Sink.
type imageSink struct{ *image.Image }

func (s imageSink) Begin(seq uint64) (Txn, error) {
	t, err := s.Image.Begin(seq)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return t, nil
}
