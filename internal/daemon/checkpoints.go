package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/progress"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Checkpoints make a memory volume durable (docs/checkpoint.md): the
// engine (internal/checkpoint, reached through checkpoint_engine.go)
// writes consistent cuts of the volume to an image; the daemon keeps
// where to in the device's state record, starts the engine again at
// every start, and brings the volume back from the image when its memory
// is gone (checkpoint_restore.go).

// ckEngine is one volume's running checkpoint engine.
type ckEngine interface {
	// Checkpoint takes a checkpoint now and returns once it is durable.
	Checkpoint(ctx context.Context) (wire.CheckpointInfo, error)
	// Persist returns once a checkpoint that holds every store made
	// before the call is durable; concurrent callers share one.
	Persist(ctx context.Context) error
	Status() ckStatus
	Close() error
}

// ckStatus is what an engine reports of itself.
type ckStatus struct {
	Last         *wire.CheckpointInfo // newest complete checkpoint, nil before the first
	Written      int64                // bytes written back since the engine started
	Running      bool                 // a checkpoint is being written
	Err          error                // why the last checkpoint failed; nil if it did not
	Completed    int64                // checkpoints completed since the engine started
	Failed       int64                // checkpoints failed since the engine started
	Backpressure int64                // writer stalls on a full copy-on-write buffer
	// BackpressureTime is how long those writers waited in all.
	BackpressureTime time.Duration
	BufferBytes      int64         // copy-on-write buffer in use now
	BufferCap        int64         // its cap
	LastDuration     time.Duration // the last checkpoint, cut to durable
	LastCut          time.Duration // how long the last cut held the volume
	Dirty            int64         // chunks written since the last cut
}

// msDuration is a number of milliseconds as a Duration.
func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// ckVolume is a checkpointed device: its configuration, as recorded,
// and its engine (nil when it could not start: startErr says why).
type ckVolume struct {
	cfg      state.Checkpoint
	eng      ckEngine
	startErr string
	restored *wire.CheckpointInfo // the checkpoint this start restored, if any
	// starting, while not closed: at the daemon's start, the engine
	// waits for the adoption of mappings an earlier daemon made
	// (checkpoint_orphans.go); eng and startErr are not set yet.
	starting chan struct{}
}

// checkpoints holds the checkpointed devices. mu is a leaf lock.
type checkpoints struct {
	// ctx ends when the daemon stops: Persist requests give up.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool // closeAll ran: engines that start now stop at once
	m      map[*dm.Device]*ckVolume
	// starting: at start, the recorded configuration of the devices
	// being restored, until their volumes start (ckRestore).
	starting map[string]state.Checkpoint
	// restoredAt: the checkpoint each device restored at start came from.
	restoredAt map[*dm.Device]*wire.CheckpointInfo
	// lazy: the restores on demand under way (checkpoint_lazy.go).
	lazy map[*dm.Device]*lazyRun
}

func newCheckpoints() *checkpoints {
	ctx, cancel := context.WithCancel(context.Background())
	return &checkpoints{ctx: ctx, cancel: cancel, m: map[*dm.Device]*ckVolume{}}
}

// get returns a copy of dev's volume, or nil.
func (c *checkpoints) get(dev *dm.Device) *ckVolume {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.m[dev]; v != nil {
		cp := *v
		return &cp
	}
	return nil
}

// ready is get, after waiting (until ctx ends) for the engine of a
// volume that is starting.
func (c *checkpoints) ready(ctx context.Context, dev *dm.Device) (*ckVolume, error) {
	v := c.get(dev)
	if v == nil || v.starting == nil {
		return v, nil
	}
	select {
	case <-v.starting:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the checkpoints of %s to start: %w", dev.Name(), ctx.Err())
	}
	return c.get(dev), nil
}

// started sets the engine (or why it did not start) of dev's volume,
// which was starting; after closeAll it stops the engine instead.
func (c *checkpoints) started(dev *dm.Device, eng ckEngine, why string) {
	c.mu.Lock()
	v := c.m[dev]
	closed := c.closed || v == nil
	if !closed {
		v.eng, v.startErr = eng, why
	}
	c.mu.Unlock()
	if closed && eng != nil {
		eng.Close()
	}
	if v != nil && v.starting != nil {
		close(v.starting)
	}
}

func (c *checkpoints) set(dev *dm.Device, v *ckVolume) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v == nil {
		delete(c.m, dev)
	} else {
		c.m[dev] = v
	}
}

// take removes dev's volume and returns it (nil if it had none).
func (c *checkpoints) take(dev *dm.Device) *ckVolume {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.m[dev]
	delete(c.m, dev)
	return v
}

// all lists the checkpointed devices with their volumes.
func (c *checkpoints) all() map[*dm.Device]*ckVolume {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[*dm.Device]*ckVolume, len(c.m))
	for d, v := range c.m {
		cp := *v
		out[d] = &cp
	}
	return out
}

// setStarting sets the configurations of the devices being restored.
func (c *checkpoints) setStarting(m map[string]state.Checkpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.starting = m
}

// restored notes that dev was restored from checkpoint info at start.
func (c *checkpoints) restored(dev *dm.Device, info *wire.CheckpointInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.restoredAt == nil {
		c.restoredAt = map[*dm.Device]*wire.CheckpointInfo{}
	}
	c.restoredAt[dev] = info
}

// finishRestore notes that dev's restore on demand from info is
// complete: its record no longer says it is under way.
func (c *checkpoints) finishRestore(dev *dm.Device, info *wire.CheckpointInfo) {
	c.restored(dev, info)
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.m[dev]; v != nil {
		v.cfg.RestoringSeq = 0
		v.restored = info
	}
}

// setLazy sets dev's restore on demand.
func (c *checkpoints) setLazy(dev *dm.Device, run *lazyRun) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lazy == nil {
		c.lazy = map[*dm.Device]*lazyRun{}
	}
	c.lazy[dev] = run
}

// takeLazy removes dev's restore on demand run, complete, for its
// caller to close; false if stopLazy took it first.
func (c *checkpoints) takeLazy(dev *dm.Device, run *lazyRun) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lazy[dev] != run {
		return false
	}
	delete(c.lazy, dev)
	return true
}

// stopLazy stops dev's restore on demand, or all of them (dev nil): the
// device went, or the daemon stops. What is restored stays, and the
// record still says a restore is under way: the next start continues it.
func (c *checkpoints) stopLazy(dev *dm.Device) {
	c.mu.Lock()
	var runs []*lazyRun
	for d, run := range c.lazy {
		if dev == nil || d == dev {
			runs = append(runs, run)
			delete(c.lazy, d)
		}
	}
	c.mu.Unlock()
	for _, run := range runs {
		run.lr.Close()
		// A read of the image may hang (a stalled disk or object
		// store): the stop does not wait for the background pass.
		go func() {
			<-run.filled
			run.img.Close()
		}()
	}
}

// restoredOf is the checkpoint dev was restored from at start, or nil.
func (c *checkpoints) restoredOf(dev *dm.Device) *wire.CheckpointInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restoredAt[dev]
}

// record is dev's checkpoint configuration for its state record.
func (c *checkpoints) record(dev *dm.Device) *state.Checkpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.m[dev]; v != nil {
		cfg := v.cfg
		return &cfg
	}
	if cfg, ok := c.starting[dev.Name()]; ok {
		return &cfg
	}
	return nil
}

// closeAll stops every engine (shutdown).
func (c *checkpoints) closeAll() error {
	c.cancel()
	c.stopLazy(nil)
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	// All at once: an engine whose image hangs takes up to a minute to
	// give up (checkpoint.Volume.Close), and the stop must not wait that
	// for each volume on the same disk in turn.
	var (
		wg   sync.WaitGroup
		emu  sync.Mutex // guards errs
		errs []error
	)
	for dev, v := range c.all() {
		if v.eng == nil {
			continue
		}
		wg.Go(func() {
			if err := v.eng.Close(); err != nil {
				emu.Lock()
				errs = append(errs, fmt.Errorf("stop checkpoints of %s: %w", dev.Name(), err))
				emu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// forget stops dev's engine: dm removed dev.
func (c *checkpoints) forget(dev *dm.Device) {
	c.stopLazy(dev)
	if v := c.take(dev); v != nil && v.eng != nil {
		v.eng.Close()
	}
}

// checkEnable checks and completes an enable request.
func checkEnable(name string, req wire.CheckpointEnable) (state.Checkpoint, error) {
	op := "checkpoint enable " + name
	switch {
	case req.IntervalMS < 0 || req.IntervalMS > 0 && req.IntervalMS < 10:
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: interval %d ms: give 10 ms or more (or 0 for the default, %d s)", op, req.IntervalMS, wire.DefaultCheckpointIntervalMS/1000)
	case req.BufferBytes < 0:
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: buffer of %d bytes: give a size ≥ 0 (0: the default)", op, req.BufferBytes)
	}
	if req.IntervalMS == 0 {
		req.IntervalMS = wire.DefaultCheckpointIntervalMS
	}
	if isS3(req.Path) {
		return checkEnableS3(name, req)
	}
	if req.Endpoint != "" {
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: --endpoint is for an object store: give --to s3://BUCKET/PREFIX", op)
	}
	switch {
	case req.Path == "":
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: no image path: give --to PATH, a file on a disk file system or a block device", op)
	case !filepath.IsAbs(req.Path):
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: image path %q is relative: give an absolute path (the daemon's directory is not yours)", op, req.Path)
	case req.Journal != "" && !filepath.IsAbs(req.Journal):
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: journal path %q is relative: give an absolute path", op, req.Journal)
	}
	cfg := state.Checkpoint{Path: filepath.Clean(req.Path), Journal: req.Journal, IntervalMS: req.IntervalMS, BufferBytes: req.BufferBytes}
	if cfg.Journal == "" {
		cfg.Journal = cfg.Path + ".journal"
	}
	cfg.Journal = filepath.Clean(cfg.Journal)
	if cfg.Journal == cfg.Path {
		return state.Checkpoint{}, errorf(dm.ErrInvalidArgument, "%s: the journal and the image are both %s: give the journal its own file", op, cfg.Path)
	}
	return cfg, nil
}

// checkpointable says why dev cannot be checkpointed, or nil: its live
// table must map write-protectable memory, whose stores the engine sees.
func checkpointable(op string, dev *dm.Device) error {
	in := dev.Info()
	if !in.LiveTable {
		return errorf(dm.ErrInvalidArgument, "%s: %s has no live table: load one on memory regions first", op, dev.Name())
	}
	if !in.LiveCaps.Has(dm.WPFault) {
		return errorf(dm.ErrNotSupported, "%s: %s is not a memory volume (its live table offers %v): checkpoints are for volumes on memory regions (`daxsnap pmem create`); a device on disk files is as durable as they are", op, dev.Name(), in.LiveCaps)
	}
	return nil
}

// durability describes dev's durability; nil for a device not on
// volatile memory and not checkpointed.
func (d *Daemon) durability(dev *dm.Device) *wire.Durability {
	v := d.cks.get(dev)
	if v == nil {
		caps := dev.Info().LiveCaps
		if !caps.Has(dm.WPFault) || caps.Has(dm.Sync) {
			return nil
		}
		return &wire.Durability{Device: dev.Name(), State: wire.DurabilityVolatile, Text: wire.DurabilityVolatile}
	}
	out := &wire.Durability{Device: dev.Name(), State: wire.DurabilityCheckpointed, Path: v.cfg.Path, Journal: v.cfg.Journal, Endpoint: v.cfg.Endpoint,
		IntervalMS: v.cfg.IntervalMS, BufferBytes: v.cfg.BufferBytes, Restored: v.restored, Error: v.startErr}
	if done, total, ok := dev.Restoring(); ok {
		out.Restoring = &wire.RestoreProgress{Seq: v.cfg.RestoringSeq, Done: done, Total: total}
	}
	if v.eng != nil {
		st := v.eng.Status()
		out.Last, out.Written, out.Running = st.Last, st.Written, st.Running
		if st.Err != nil {
			out.Error = st.Err.Error()
		}
	}
	out.Text = durabilityText(out, time.Now())
	return out
}

// durabilityText is the durability line of info and status:
// "checkpointed: last complete 12 s ago (interval 30 s), 1.2 GiB written".
func durabilityText(du *wire.Durability, now time.Time) string {
	if du.State != wire.DurabilityCheckpointed {
		return du.State
	}
	last := "no complete checkpoint yet"
	if du.Last != nil {
		last = "last complete " + agoText(now.Sub(du.Last.Time)) + " ago"
	}
	to := ""
	if isS3(du.Path) {
		to = " to " + du.Path
	}
	s := fmt.Sprintf("checkpointed%s: %s (interval %s), %s written", to, last, agoText(time.Duration(du.IntervalMS)*time.Millisecond), progress.Bytes(du.Written))
	if r := du.Restoring; r != nil {
		s = fmt.Sprintf("checkpointed%s: restoring on demand from checkpoint %d, %s of %s so far; checkpoints start when it is complete", to, r.Seq, progress.Bytes(r.Done), progress.Bytes(r.Total))
	}
	if du.Error != "" {
		s += "; the last checkpoint failed: " + du.Error
	}
	return s
}

// agoText is a duration as people read it: "12 s", "4 min", "3 h".
func agoText(d time.Duration) string {
	switch {
	case d < 0:
		return "0 s"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < 2*time.Minute:
		return fmt.Sprintf("%d s", int64(d/time.Second))
	case d < 2*time.Hour:
		return fmt.Sprintf("%d min", int64(d/time.Minute))
	}
	return fmt.Sprintf("%d h", int64(d/time.Hour))
}
