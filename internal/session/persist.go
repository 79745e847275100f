package session

import (
	"errors"
	"fmt"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Persist on a checkpointed volume: the client's Mapping.Persist asks
// (OpPersist) and the daemon's Config.Persist hook answers once a
// checkpoint holding every store made before the request is durable.
// Each request runs in its own goroutine, so that a session's recall
// answers and unmaps are not held behind a checkpoint; concurrent
// requests share checkpoints in the hook (group commit). Close ends the
// hook's context and waits for it to return.

// durabilityOf is what the grant of a map of dev says of Persist.
func (s *Server) durabilityOf(dev *dm.Device, media string) (string, bool) {
	if s.cfg.Durability == nil {
		return media, false
	}
	if text, ok := s.cfg.Durability(dev); ok {
		return text, true
	}
	return media, false
}

// persist answers an OpPersist for mapping id.
func (x *session) persist(id uint64) error {
	x.mu.Lock()
	mp := x.maps[id]
	x.mu.Unlock()
	if mp == nil {
		return x.refuse(id, wire.CodeNotFound, fmt.Errorf("persist: no mapping %d in this session", id))
	}
	if !mp.write {
		// A read-only mapping stores nothing; its Persist has nothing to wait for.
		return x.send(wire.SessionMsg{Op: wire.OpPersisted, ID: id, Durability: &wire.MapDurability{Text: "read-only mapping: nothing to persist"}})
	}
	x.srv.wg.Add(1)
	go func() {
		defer x.srv.wg.Done()
		err := errors.New("this daemon does not checkpoint volumes")
		if x.srv.cfg.Persist != nil {
			err = x.srv.cfg.Persist(x.srv.stopping, mp.dev)
		}
		text, ok := x.srv.durabilityOf(mp.dev, "")
		if err != nil {
			if x.srv.stopping.Err() != nil {
				err = fmt.Errorf("the daemon is stopping: %w (the client asks the next daemon)", err)
			}
			x.refuse(id, codeOf(err), fmt.Errorf("persist %s: %w", mp.dev.Name(), err))
			return
		}
		x.send(wire.SessionMsg{Op: wire.OpPersisted, ID: id, Durability: &wire.MapDurability{Text: text, Checkpointed: ok}})
	}()
	return nil
}

// DurabilityChanged tells the clients that map dev that what Persist
// achieves on it changed (checkpoints were turned on or off): each
// mapping of dev gets an OpDurability, unasked. A client that misses it
// (its session ends) learns it at its next map.
func (s *Server) DurabilityChanged(dev *dm.Device, media string) {
	ds := s.devState(dev)
	if ds == nil {
		return
	}
	text, ok := s.durabilityOf(dev, media)
	for _, m := range ds.list() {
		if m.dev != dev || m.dropped.Load() {
			continue
		}
		m.sess.send(wire.SessionMsg{Op: wire.OpDurability, ID: m.id, Durability: &wire.MapDurability{Text: text, Checkpointed: ok}})
	}
}
