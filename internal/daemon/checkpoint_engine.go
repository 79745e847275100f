package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/daxsnap/daxsnap/internal/checkpoint"
	"github.com/daxsnap/daxsnap/internal/checkpoint/image"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// The daemon reaches the checkpoint engine (internal/checkpoint) and its
// image (internal/checkpoint/image) through this file only.

// ckImage is an open checkpoint image.
type ckImage interface {
	// Last is the newest complete checkpoint; false before the first.
	Last() (wire.CheckpointInfo, bool)
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
	Close() error
}

// Chunk sizes of new images: the unit of dirty tracking and write-back.
// Large enough for large, aligned writes, small enough that a store
// copies little; never below the memory's page size (2 MiB on hugetlbfs).
const defaultCheckpointChunk = 64 << 10

// imageOf is an open image.Image as a ckImage.
type imageOf struct{ *image.Image }

func (im imageOf) Last() (wire.CheckpointInfo, bool) {
	l := im.Image.Last()
	return infoOf(l), l.Seq != 0
}

func infoOf(l image.Checkpoint) wire.CheckpointInfo {
	return wire.CheckpointInfo{Seq: l.Seq, Time: l.Time, Bytes: l.Bytes, Chunks: l.Chunks}
}

// CheckpointDevs opens the image and the journal of a checkpoint
// configuration as devices, in place of their files (Config.CheckpointDevs:
// tests hand the daemon crash devices, storetest.CrashDev, to clone at
// any instant of a write-back). exists says whether the journal was made
// before, as a journal file that exists: when it was not and the image is
// being enabled, an image is created on them, and img must read as
// zeroes. The daemon does not close them.
type CheckpointDevs func(path, journal string) (img, jnl image.Dev, exists bool, err error)

// openImage opens cfg's image, recovering it from its journal (a
// checkpoint committed in the journal is applied); with create, it makes
// a new one for a volume of size bytes in chunks of chunk bytes when
// there is no journal yet. A damaged image or journal is refused, saying
// what to do. devs, if not nil, opens the devices instead of the files.
func openImage(devs CheckpointDevs, cfg state.Checkpoint, size, chunk int64, create bool) (ckImage, error) {
	if isS3(cfg.Path) {
		return openS3(cfg, size, chunk, create)
	}
	opt := image.Options{JournalPath: cfg.Journal}
	_, err := os.Stat(cfg.Journal)
	fresh := errors.Is(err, os.ErrNotExist)
	newImage := func() (*image.Image, error) { return image.Create(cfg.Path, size, chunk, opt) }
	oldImage := func() (*image.Image, error) { return image.Open(cfg.Path, opt) }
	if devs != nil {
		img, jnl, exists, err := devs(cfg.Path, cfg.Journal)
		if err != nil {
			return nil, fmt.Errorf("open checkpoint image %s: %w", cfg.Path, err)
		}
		fresh = !exists
		newImage = func() (*image.Image, error) { return image.CreateOn(img, jnl, size, chunk, opt) }
		oldImage = func() (*image.Image, error) { return image.OpenOn(img, jnl, opt) }
	}
	if create && fresh {
		im, err := newImage()
		if err != nil {
			return nil, fmt.Errorf("%w: give a path on a disk file system where neither %s nor %s exists, or a block device", err, cfg.Path, cfg.Journal)
		}
		return imageOf{im}, nil
	}
	im, err := oldImage()
	if err != nil {
		if errors.Is(err, image.ErrCorrupt) {
			return nil, errorf(dm.ErrInvalidArgument, "%v: the image %s and its journal %s are refused, and nothing was read from them: restore them from a backup, or remove both to start a new image (the checkpoints in them are then lost)", err, cfg.Path, cfg.Journal)
		}
		return nil, err
	}
	if size != 0 && im.Size() != size {
		im.Close()
		return nil, errorf(dm.ErrInvalidArgument, "the image %s holds %d bytes and the volume has %d: it is another volume's image: give another path, or remove it and its journal %s", cfg.Path, im.Size(), size, cfg.Journal)
	}
	return imageOf{im}, nil
}

// chunkFor is the chunk size of a new image for dev.
func chunkFor(dev *dm.Device) int64 {
	chunk := int64(defaultCheckpointChunk)
	if exts, err := dev.Extents(0, dev.Size()); err == nil {
		for _, e := range exts {
			for chunk < e.PageSize {
				chunk *= 2
			}
		}
	}
	return chunk
}

// engineOf is a running checkpoint.Volume as a ckEngine.
type engineOf struct {
	v  *checkpoint.Volume
	im ckImage
}

// startEngine starts checkpointing dev into img. inSync: dev holds
// exactly img's last checkpoint (just restored from it, nothing maps
// it), so the first checkpoint writes only what changes after.
func (d *Daemon) startEngine(dev *dm.Device, img ckImage, cfg state.Checkpoint, inSync bool) (ckEngine, error) {
	ccfg := checkpoint.Config{Device: dev, Interval: msDuration(cfg.IntervalMS),
		BufferBytes: cfg.BufferBytes, InSync: inSync, Log: d.log}
	switch im := img.(type) {
	case imageOf:
		ccfg.Image = im.Image
	case s3Image:
		ccfg.Sink = s3Sink{im.c}
	}
	v, err := checkpoint.Start(ccfg)
	if err != nil {
		return nil, err
	}
	return engineOf{v: v, im: img}, nil
}

func (e engineOf) Checkpoint(ctx context.Context) (wire.CheckpointInfo, error) {
	cp, err := e.v.Checkpoint(ctx)
	return infoOf(cp), err
}

func (e engineOf) Persist(ctx context.Context) error { return e.v.Persist(ctx) }

func (e engineOf) Close() error {
	if err := e.v.Close(); errors.Is(err, checkpoint.ErrHung) {
		return err // a write to the image is under way: the image stays open under it
	} else if err != nil {
		return errors.Join(err, e.im.Close())
	}
	return e.im.Close()
}

func (e engineOf) Status() ckStatus {
	st := e.v.Status()
	out := ckStatus{Written: st.WrittenBytes, Running: st.InProgress, Err: st.LastError, Completed: st.Checkpoints,
		Failed: st.Failures, Backpressure: st.BackpressureWaits, BackpressureTime: st.BackpressureTime,
		BufferBytes: st.BufferUsed, BufferCap: st.BufferCap, LastDuration: st.LastDuration, LastCut: st.LastCutTime,
		Dirty: st.DirtyChunks}
	if st.Last.Seq != 0 {
		l := infoOf(st.Last)
		l.DurationMS = st.LastDuration.Milliseconds()
		out.Last = &l
	}
	return out
}
