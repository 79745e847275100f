package daemon

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/progress"
	"github.com/daxsnap/daxsnap/internal/state"
)

// ckRestore brings checkpointed volumes back at start. A volume whose
// region files are gone (a reboot emptied /dev/shm) is restored from the
// newest complete checkpoint of its image into fresh regions before
// anything can reach it; a volume whose memory is intact keeps it. Then
// every checkpointed volume's engine starts again (its first checkpoint
// is full: the daemon does not know what changed while it was away).
//
// A restore is all or nothing: an image that does not open (corrupt,
// truncated, a journal that does not check) or holds no complete
// checkpoint leaves the regions missing, so the volume serves an `error`
// table with a note saying why, and its recorded table and checkpoint
// configuration are kept for the next start; a copy that fails midway
// does the same. Never is a volume served half restored.
type ckRestore struct {
	d     *Daemon
	recs  map[string]state.Checkpoint // checkpointed devices by name
	fills map[string]ckImage          // devices to fill from their image
	why   map[string]string           // devices not restored, and why
	// cont: devices whose restore on demand an earlier daemon left
	// unfinished, to continue into the holes of their regions.
	cont map[string]bool
	lazy map[string]*lazyRun // restores on demand started (checkpoint_lazy.go)
}

// prepare, before the devices come back, makes the regions of
// checkpointed volumes whose memory is gone again, when their image holds
// a checkpoint to restore.
func (r *ckRestore) prepare(recs []state.Device) {
	r.recs, r.fills, r.why = map[string]state.Checkpoint{}, map[string]ckImage{}, map[string]string{}
	r.cont, r.lazy = map[string]bool{}, map[string]*lazyRun{}
	defer func() { r.d.cks.setStarting(r.recs) }()
	for _, rec := range recs {
		if rec.Checkpoint == nil {
			continue
		}
		r.recs[rec.Name] = *rec.Checkpoint
		missing := r.d.regions.Missing(tableArgs(rec.Live))
		seq := rec.Checkpoint.RestoringSeq
		if len(missing) == 0 && seq == 0 {
			continue // memory intact
		}
		log := r.d.log.With("device", rec.Name, "image", rec.Checkpoint.Path)
		img, err := openImage(r.d.cfg.CheckpointDevs, *rec.Checkpoint, 0, 0, false)
		if err != nil {
			r.why[rec.Name] = fmt.Sprintf("Its memory was gone at start and its checkpoint image was refused, so it was not restored: %v. Repair or replace the image and restart `daxsnap serve`.", err)
			log.Error("volume not restored: memory gone, image refused", "err", err)
			continue
		}
		last, ok := img.Last()
		if !ok {
			img.Close()
			r.why[rec.Name] = fmt.Sprintf("Its memory was gone at start and its checkpoint image %s holds no complete checkpoint, so there was nothing to restore.", rec.Checkpoint.Path)
			log.Error("volume not restored: memory gone, image holds no complete checkpoint")
			continue
		}
		if seq != 0 {
			// An earlier daemon restored it on demand and stopped first:
			// its regions hold what was restored or written since.
			if last.Seq != seq {
				img.Close()
				r.why[rec.Name] = fmt.Sprintf("Its restore on demand from checkpoint %d of %s was not finished, and the image's newest checkpoint is now %d, so it cannot be continued. Delete the volume's region files and restart `daxsnap serve` to restore it again.", seq, rec.Checkpoint.Path, last.Seq)
				log.Error("volume not restored: the restore under way cannot be continued", "seq", seq, "image_seq", last.Seq)
				continue
			}
			r.cont[rec.Name] = true
			log.Info("continuing the restore on demand an earlier daemon left unfinished", "seq", seq, "regions_missing", len(missing))
		}
		var errs []error
		for _, reg := range missing {
			// A restore on demand fills holes only: its regions are not
			// reserved up front (their memory comes as it is restored).
			if _, err := r.d.regions.Recreate(reg.Name, r.d.cfg.LazyRestore || seq != 0); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			img.Close()
			r.why[rec.Name] = fmt.Sprintf("Its memory was gone at start and its regions could not be made again, so it was not restored: %v.", err)
			log.Error("volume not restored: regions not made again", "err", err)
			continue
		}
		r.fills[rec.Name] = img
	}
}

// tableArgs lists every target argument of a table text (the paths
// among them name its backing files).
func tableArgs(text string) []string {
	lines, err := dm.ParseTable(text)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range lines {
		out = append(out, l.Args...)
	}
	return out
}

// fill, once the devices are back and before anything can reach them,
// copies each image to be restored into its volume.
func (r *ckRestore) fill() {
	for name, img := range r.fills {
		if r.d.cfg.LazyRestore || r.cont[name] {
			err := r.lazyOne(name, img)
			if err == nil {
				continue // the image is the restore's now
			}
			if r.cont[name] {
				// Its regions hold stores a whole copy would undo.
				r.why[name] = fmt.Sprintf("Its restore on demand from %s was not finished and could not be continued: %v.", r.recs[name].Path, err)
				r.d.log.Error("volume not restored", "device", name, "image", r.recs[name].Path, "err", err)
				r.degrade(name)
				img.Close()
				continue
			}
			r.d.log.Warn("volume restored whole before it serves: it cannot be restored on demand", "device", name, "err", err)
		}
		if err := r.fillOne(name, img); err != nil {
			r.why[name] = fmt.Sprintf("Its memory was gone at start and the restore from %s failed, so it serves nothing rather than half its data: %v. Check the image and restart `daxsnap serve`.", r.recs[name].Path, err)
			r.d.log.Error("volume not restored", "device", name, "image", r.recs[name].Path, "err", err)
			r.degrade(name)
		}
		img.Close()
	}
	for name, why := range r.why {
		r.d.devs.updateNote(name, func(n *note) { n.degraded = why })
	}
}

// target is device name, to be restored from img.
func (r *ckRestore) target(name string, img ckImage) (*dm.Device, error) {
	dev, err := r.d.mgr.Get(name)
	if err != nil {
		return nil, err
	}
	if r.d.devs.note(dev).keptLive != "" {
		return nil, errors.New("its table did not load")
	}
	if img.Size() != dev.Size() {
		return nil, fmt.Errorf("the image holds %d bytes and the volume has %d", img.Size(), dev.Size())
	}
	return dev, nil
}

// fillOne copies the newest complete checkpoint of img into device name.
func (r *ckRestore) fillOne(name string, img ckImage) error {
	dev, err := r.target(name, img)
	if err != nil {
		return err
	}
	last, _ := img.Last()
	size := img.Size()
	log := r.d.log.With("device", name, "image", r.recs[name].Path, "seq", last.Seq, "checkpoint_time", last.Time.UTC().Format(time.RFC3339Nano))
	log.Info("restoring volume from its checkpoint: its memory was gone", "bytes", size)
	start := time.Now()
	if err := copyImage(dev, img, size, func(done int64) {
		log.Info("restoring", "done", progress.Bytes(done), "of", progress.Bytes(size), "percent", done*100/size)
	}); err != nil {
		return err
	}
	if err := dev.Flush(); err != nil {
		return fmt.Errorf("flush the volume: %w", err)
	}
	took := time.Since(start)
	info := last
	r.d.cks.restored(dev, &info)
	log.Info("volume restored from checkpoint", "bytes", size, "duration", took.String(),
		"mib_per_s", fmt.Sprintf("%.0f", float64(size)/(1<<20)/max(took.Seconds(), 1e-9)))
	return nil
}

// restoreBlock is the size of a restore's reads and writes, and
// restoreStreams how many run at once: the image is read with O_DIRECT,
// and several reads in flight keep the disk busy while the memory is
// written.
const (
	restoreBlock   = 8 << 20
	restoreStreams = 4
)

// copyImage copies size bytes of img into dev, restoreStreams blocks at
// a time, calling progress about every second with the bytes done. The
// first error stops it. It writes a tmpfs volume through its file
// (Device.WriteFileAt): a store through the daemon's mapping first maps
// the page, which made the restore a quarter as fast as reading the image.
func copyImage(dev *dm.Device, img ckImage, size int64, progress func(done int64)) error {
	var next, done atomic.Int64
	var mu sync.Mutex
	var first error
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		next.Store(size) // the others stop at their next block
	}
	var wg sync.WaitGroup
	for range restoreStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, restoreBlock)
			for {
				off := next.Add(restoreBlock) - restoreBlock
				if off >= size {
					return
				}
				n := min(restoreBlock, size-off)
				if _, err := img.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && n > 0) {
					fail(fmt.Errorf("read the image at %d: %w", off, err))
					return
				}
				if _, err := dev.WriteFileAt(buf[:n], off); err != nil {
					fail(fmt.Errorf("write the volume at %d: %w", off, err))
					return
				}
				done.Add(n)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-finished:
			return first
		case <-tick.C:
			progress(done.Load())
		}
	}
}

// degrade puts an `error` table in place of device name's, keeping its
// recorded table for the next start (as a table that does not load).
func (r *ckRestore) degrade(name string) {
	dev, err := r.d.mgr.Get(name)
	if err != nil {
		return
	}
	live, _ := dev.Table(dm.Live)
	r.d.devs.updateNote(name, func(n *note) {
		if n.keptLive == "" {
			n.keptLive = live
		}
	})
	err = dev.Load(fmt.Sprintf("0 %d error", dev.Size()/512))
	if err == nil {
		err = dev.Resume()
	}
	if err != nil {
		r.d.log.Error("volume half restored and its error table did not go live: it may serve partial data: do not use it; delete its region files and restart `daxsnap serve` to restore it again from the image",
			"device", name, "err", err)
	}
}

// start starts the engine of every checkpointed volume that is back; one
// that is not keeps its configuration, and a note says why it does not
// checkpoint. A volume whose memory stayed starts once the mappings of
// it that an earlier daemon made are adopted (checkpoint_orphans.go).
func (r *ckRestore) start() {
	for name, cfg := range r.recs {
		dev, err := r.d.mgr.Get(name)
		if err != nil {
			continue
		}
		v := &ckVolume{cfg: cfg, restored: r.d.cks.restoredOf(dev)}
		switch {
		case r.why[name] != "":
			v.startErr = "the volume was not restored: see its note"
		case r.d.devs.note(dev).keptLive != "":
			v.startErr = "its table did not load: see its note"
		default:
			v.starting = make(chan struct{})
		}
		r.d.cks.set(dev, v)
		if v.starting == nil {
			r.d.log.Error("checkpoints of volume not started", "device", name, "image", cfg.Path, "err", v.startErr)
			continue
		}
		if run := r.lazy[name]; run != nil {
			r.d.ckStarts.Add(1)
			go func() {
				defer r.d.ckStarts.Done()
				if r.awaitLazy(dev, run) {
					cfg.RestoringSeq = 0
					r.startOne(dev, cfg, false)
				}
			}()
			continue
		}
		if v.restored != nil {
			r.startOne(dev, cfg, true) // before the doors open
			continue
		}
		r.d.ckStarts.Add(1)
		go func() {
			defer r.d.ckStarts.Done()
			r.startOne(dev, cfg, false)
		}()
	}
	r.d.cks.setStarting(nil)
}

// startOne starts the engine of dev, once the mappings of its memory an
// earlier daemon made are adopted (a restored volume has none: its
// memory is new).
func (r *ckRestore) startOne(dev *dm.Device, cfg state.Checkpoint, restored bool) {
	log := r.d.log.With("device", dev.Name(), "image", cfg.Path)
	if !restored {
		if pids := r.d.waitAdopted(dev); len(pids) > 0 {
			log.Warn("checkpoints start with mappings of the volume not taken over from the last daemon: until they are, their stores may escape the checkpoints' cuts",
				"pids", pids, "waited", adoptWait.String())
		}
	}
	// The chunk matters only to checkpoints to an object store that hold
	// none yet (a file image has its own).
	img, err := openImage(r.d.cfg.CheckpointDevs, cfg, dev.Size(), chunkFor(dev), false)
	var eng ckEngine
	if err == nil {
		// Restored now, and nothing maps it yet: the image holds what
		// the volume does.
		if eng, err = r.d.startEngine(dev, img, cfg, restored); err != nil {
			img.Close()
		}
	}
	why := ""
	if err != nil {
		why = err.Error()
		log.Error("checkpoints of volume not started", "err", err)
	} else {
		log.Info("checkpoints resumed", "interval_ms", cfg.IntervalMS)
	}
	r.d.cks.started(dev, eng, why)
}
