package daemon

import (
	"errors"
	"fmt"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/lazyrestore"
	"github.com/daxsnap/daxsnap/internal/progress"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// A lazy restore (serve --restore=lazy) serves a checkpointed volume
// whose memory is gone at once: its regions are made again, empty, and
// the volume's dm.Filler (lazyFill) restores each unit from the image
// when a block I/O or a client's mapping first needs it (the session
// registers mappings for missing faults while dm.Device.Filling), while
// a background pass restores the rest. The state record carries the
// checkpoint being restored (state.Checkpoint.RestoringSeq) from before
// anything can write until the restore is complete, so a start after a
// crash or a stop continues it into the holes of the regions
// (internal/lazyrestore says why that is exact). Checkpoints start once
// it is complete; their first is full.

// lazyRun is one volume's lazy restore.
type lazyRun struct {
	lr     *lazyrestore.Restore
	img    ckImage
	info   wire.CheckpointInfo // the checkpoint restored
	start  time.Time
	filled chan struct{} // closed when the background pass returns, err set
	err    error
	// settled is closed once the restore is complete and recorded as
	// such (or could not be: settleErr): only then may a discard make a
	// hole, which a start with RestoringSeq set would fill again.
	settled   chan struct{}
	settleErr error
}

// lazyStreams is how many units the background pass restores at once:
// fewer than an eager restore's streams, so that the units asked for on
// demand wait less for a CPU behind it.
const lazyStreams = 2

// lazyFill is a lazy restore as its device's filler.
type lazyFill struct{ run *lazyRun }

func (f lazyFill) Fill(off, n int64) error  { return f.run.lr.Fill(off, n) }
func (f lazyFill) Progress() (int64, int64) { return f.run.lr.Progress() }
func (f lazyFill) FillAll() error {
	if err := f.run.lr.FillAll(); err != nil {
		return err
	}
	<-f.run.settled
	return f.run.settleErr
}

// lazyOne starts the lazy restore of device name from img, which it owns
// from then on. It fails with nothing changed when the volume's memory
// cannot be restored so (lazyrestore.ErrUnsupported: hugetlbfs).
func (r *ckRestore) lazyOne(name string, img ckImage) error {
	dev, err := r.target(name, img)
	if err != nil {
		return err
	}
	size := img.Size()
	last, _ := img.Last()
	exts, err := dev.Extents(0, size)
	if err != nil {
		return fmt.Errorf("%w: %v", lazyrestore.ErrUnsupported, err)
	}
	pieces := make([]lazyrestore.Piece, len(exts))
	for i, e := range exts {
		fd, base := e.Source.MapFile()
		pieces[i] = lazyrestore.Piece{Off: e.Off, Len: e.Len, FD: int(fd), FileOff: base + e.SourceOff, Page: e.PageSize, Path: e.Path}
	}
	lr, err := lazyrestore.Start(lazyrestore.Config{Size: size, Pieces: pieces, Image: img})
	if err != nil {
		return err
	}
	// Recorded before anything can write to the volume.
	cfg := r.recs[name]
	cfg.RestoringSeq = last.Seq
	r.recs[name] = cfg
	if rec := r.d.record(dev); rec != nil {
		if err := r.d.store.PutDevice(*rec); err != nil {
			lr.Close()
			return fmt.Errorf("record the restore under way: %w", err)
		}
	}
	run := &lazyRun{lr: lr, img: img, info: last, start: time.Now(), filled: make(chan struct{}), settled: make(chan struct{})}
	dev.SetFiller(lazyFill{run})
	r.d.cks.setLazy(dev, run)
	r.lazy[name] = run
	r.d.log.Info("restoring volume on demand from its checkpoint: its memory was gone; it serves now",
		"device", name, "image", cfg.Path, "seq", last.Seq, "checkpoint_time", last.Time.UTC().Format(time.RFC3339Nano), "bytes", size)
	// Not one of the daemon's goroutines a stop waits for: a read of
	// the image may hang, and Close makes the pass stop at its next unit.
	go func() {
		run.err = lr.Run(lazyStreams)
		close(run.filled)
	}()
	return nil
}

// awaitLazy waits for dev's lazy restore to be complete, then records it
// as such and lets the filler go; false if it did not complete (the
// volume then serves what is restored, and its checkpoints do not start).
func (r *ckRestore) awaitLazy(dev *dm.Device, run *lazyRun) bool {
	select {
	case <-run.filled:
	case <-run.lr.Stopped():
		// The daemon stops, or the device went: the next start continues.
		r.d.cks.started(dev, nil, "the restore on demand was stopped")
		return false
	}
	log := r.d.log.With("device", dev.Name(), "seq", run.info.Seq)
	if run.err != nil {
		defer close(run.settled)
		run.settleErr = run.err
		if errors.Is(run.err, lazyrestore.ErrClosed) {
			// The daemon stops, or the device went: the next start continues.
			r.d.cks.started(dev, nil, "the restore on demand was stopped")
			return false
		}
		why := fmt.Sprintf("Its memory was gone at start and its restore on demand from checkpoint %d stopped: %v. What is restored serves; the rest fails with I/O errors. Check the image and restart `daxsnap serve` to continue the restore.", run.info.Seq, run.err)
		r.d.devs.updateNote(dev.Name(), func(n *note) { n.degraded = why })
		r.d.cks.started(dev, nil, "the restore on demand stopped: see the volume's note")
		log.Error("restore on demand stopped", "err", run.err)
		return false
	}
	r.d.cks.finishRestore(dev, &run.info)
	r.d.graphMu.Lock()
	if rec := r.d.record(dev); rec != nil {
		run.settleErr = r.d.store.PutDevice(*rec)
	}
	r.d.graphMu.Unlock()
	close(run.settled)
	if run.settleErr != nil {
		log.Error("volume restored, but the state file still says it is being restored", "err", run.settleErr)
		r.d.cks.started(dev, nil, "the state file could not be updated: "+run.settleErr.Error())
		return false
	}
	if !r.d.cks.takeLazy(dev, run) {
		return false // stopped meanwhile (stopLazy closes it)
	}
	dev.SetFiller(nil)
	run.lr.Close()
	run.img.Close()
	took := time.Since(run.start)
	_, size := run.lr.Progress()
	log.Info("volume restored from checkpoint (on demand)", "bytes", size, "duration", took.String(),
		"mib_per_s", fmt.Sprintf("%.0f", float64(size)/(1<<20)/max(took.Seconds(), 1e-9)), "size", progress.Bytes(size))
	return true
}
