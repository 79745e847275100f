package daemon

import (
	"context"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// ckHooks are the session server's hooks for Persist on checkpointed
// volumes: a client's Mapping.Persist reaches the volume's engine, whose
// Persist shares checkpoints among concurrent callers (group commit).
type ckHooks struct{ d *Daemon }

// mapDurability is what Persist achieves on dev, if dev is checkpointed.
func (h ckHooks) mapDurability(dev *dm.Device) (string, bool) {
	v := h.d.cks.get(dev)
	if v == nil {
		return "", false
	}
	return "checkpointed to " + v.cfg.Path + ": Persist returns once a checkpoint holding every store made before it is durable on disk (or stored in the object store)", true
}

// persist returns once a checkpoint of dev holding every store made
// before the call is durable.
func (h ckHooks) persist(ctx context.Context, dev *dm.Device) error {
	v, err := h.d.cks.ready(ctx, dev)
	if err != nil {
		return err
	}
	switch {
	case v == nil:
		return nil // not checkpointed (any more): the msync was all there is; the answer says so
	case v.eng == nil:
		return errorf(dm.ErrNotSupported, "the checkpoints of %s did not start: %s", dev.Name(), v.startErr)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(h.d.cks.ctx, cancel) // the daemon stops
	defer stop()
	return v.eng.Persist(ctx)
}

// durabilityChanged tells the clients mapping dev what Persist achieves
// on it now.
func (s *daxSessions) durabilityChanged(dev *dm.Device) {
	if s.srv == nil {
		return
	}
	media := "volatile memory: Persist is msync; the contents survive a daemon restart, not a reboot"
	s.srv.DurabilityChanged(dev, media)
}
