package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/progress"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// checkpointService is the daemon's api.CheckpointService.
type checkpointService struct{ *Daemon }

var _ api.CheckpointService = checkpointService{}

// CheckpointGet says how durable device name is.
func (s checkpointService) CheckpointGet(ctx context.Context, name string) (wire.Durability, error) {
	dev, err := s.device("checkpoint", name)
	if err != nil {
		return wire.Durability{}, err
	}
	if du := s.durability(dev); du != nil {
		return *du, nil
	}
	return wire.Durability{}, errorf(dm.ErrNotSupported, "checkpoint %s: %s is not a memory volume: it is as durable as what its table maps", name, name)
}

// CheckpointEnable starts checkpointing device name to req.Path.
func (s checkpointService) CheckpointEnable(ctx context.Context, name string, req wire.CheckpointEnable) (wire.Durability, error) {
	op := "checkpoint enable " + name
	cfg, err := checkEnable(name, req)
	if err != nil {
		return wire.Durability{}, err
	}
	if err := s.refuseWhileStopping(op); err != nil {
		return wire.Durability{}, err
	}
	unlock := s.locks.lock(name)
	defer unlock()
	dev, err := s.device(op, name)
	if err != nil {
		return wire.Durability{}, err
	}
	if err := checkpointable(op, dev); err != nil {
		return wire.Durability{}, err
	}
	// A merge writes the memory below the device the checkpoints track
	// (snapshots refuses a merge into a checkpointed origin).
	if snap, deferred := s.snaps.MergeInto(name); snap != "" && !deferred {
		return wire.Durability{}, errorf(dm.ErrBusy, "%s: snapshot %s is merging into %s, which checkpoints cannot follow: wait for the merge to finish (`daxsnap snapshot merge %s` waits), then enable", op, snap, name, snap)
	} else if snap != "" {
		return wire.Durability{}, errorf(dm.ErrBusy, "%s: the merge of snapshot %s into %s waits for its users to let go, and checkpoints cannot follow a merge: let them go so that it runs, then enable; or drop it with the snapshot (`daxsnap snapshot remove %s`)", op, snap, name, snap)
	}
	if v := s.cks.get(dev); v != nil {
		if v.cfg == cfg {
			return *s.durability(dev), nil // as asked already
		}
		return wire.Durability{}, errorf(dm.ErrExists, "%s: it is checkpointed to %s already: `daxsnap checkpoint disable %s` first to change where or how often", op, v.cfg.Path, name)
	}
	if other := s.imageUser(cfg); other != "" {
		return wire.Durability{}, errorf(dm.ErrBusy, "%s: %s is the checkpoint image of %s: give each volume its own image", op, cfg.Path, other)
	}
	var v *ckVolume
	enable := func() error {
		_, jerr := os.Lstat(cfg.Journal)
		_, ierr := os.Lstat(cfg.Path)
		img, err := openImage(s.cfg.CheckpointDevs, cfg, dev.Size(), chunkFor(dev), true)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		eng, err := s.startEngine(dev, img, cfg, false)
		if err != nil {
			img.Close()
			if !isS3(cfg.Path) && errors.Is(jerr, os.ErrNotExist) { // made just now: take it back
				os.Remove(cfg.Journal)
				if errors.Is(ierr, os.ErrNotExist) {
					os.Remove(cfg.Path)
				}
			}
			return fmt.Errorf("%s: %w", op, err)
		}
		v = &ckVolume{cfg: cfg, eng: eng}
		s.cks.set(dev, v)
		return nil
	}
	if err := s.store.DeviceTransition(name, state.Op{Verb: "checkpoint-enable"}, enable, func() *state.Device { return s.record(dev) }); err != nil {
		if v != nil {
			s.cks.forget(dev)
		}
		return wire.Durability{}, err
	}
	s.log.Info("checkpoints enabled", "device", name, "image", cfg.Path, "journal", cfg.Journal, "interval_ms", cfg.IntervalMS)
	s.sessions.durabilityChanged(dev)
	return *s.durability(dev), nil
}

// imageUser names the device already checkpointed to cfg's image or
// journal, or "".
func (s checkpointService) imageUser(cfg state.Checkpoint) string {
	for dev, v := range s.cks.all() {
		if isS3(cfg.Path) || isS3(v.cfg.Path) {
			// Volumes share a place, each under its own name.
			if v.cfg.Path == cfg.Path && v.cfg.Volume == cfg.Volume {
				return dev.Name()
			}
			continue
		}
		for _, p := range []string{v.cfg.Path, v.cfg.Journal} {
			if p == cfg.Path || p == cfg.Journal {
				return dev.Name()
			}
		}
	}
	return ""
}

// CheckpointNow takes a checkpoint of device name and waits until it is
// durable.
func (s checkpointService) CheckpointNow(ctx context.Context, name string) (wire.Durability, error) {
	op := "checkpoint " + name
	dev, v, err := s.checkpointed(ctx, op, name)
	if err != nil {
		return wire.Durability{}, err
	}
	if _, err := v.eng.Checkpoint(ctx); err != nil {
		return wire.Durability{}, fmt.Errorf("%s: %w", op, err)
	}
	return *s.durability(dev), nil
}

// checkpointed is device name and its running engine, or an error for op.
// At the daemon's start it waits (until ctx ends) for the engine to start.
func (d *Daemon) checkpointed(ctx context.Context, op, name string) (*dm.Device, *ckVolume, error) {
	dev, err := d.device(op, name)
	if err != nil {
		return nil, nil, err
	}
	v, err := d.cks.ready(ctx, dev)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case v == nil:
		return nil, nil, errorf(dm.ErrInvalidArgument, "%s: %s is not checkpointed: `daxsnap checkpoint enable %s --to PATH` first", op, name, name)
	case v.eng == nil:
		return nil, nil, errorf(dm.ErrNotSupported, "%s: the checkpoints of %s did not start: %s", op, name, v.startErr)
	}
	return dev, v, nil
}

// CheckpointDisable stops checkpointing device name; the image keeps the
// checkpoints it has.
func (s checkpointService) CheckpointDisable(ctx context.Context, name string) error {
	op := "checkpoint disable " + name
	unlock := s.locks.lock(name)
	defer unlock()
	dev, err := s.device(op, name)
	if err != nil {
		return err
	}
	v := s.cks.get(dev)
	if v == nil {
		return errorf(dm.ErrInvalidArgument, "%s: %s is not checkpointed", op, name)
	}
	if done, total, ok := dev.Restoring(); ok {
		// Its record must say so until the restore is complete, or a
		// start would take its half-restored regions as intact.
		return fmt.Errorf("%s: %w (%s of %s so far): disable it once `daxsnap status` no longer says restoring", op, dm.ErrRestoring, progress.Bytes(done), progress.Bytes(total))
	}
	disable := func() error {
		s.cks.set(dev, nil)
		if v.eng != nil {
			return v.eng.Close()
		}
		return nil
	}
	err = s.store.DeviceTransition(name, state.Op{Verb: "checkpoint-disable"}, disable, func() *state.Device { return s.record(dev) })
	if err != nil {
		return err
	}
	s.log.Info("checkpoints disabled; the image stays", "device", name, "image", v.cfg.Path)
	s.sessions.durabilityChanged(dev)
	return nil
}
