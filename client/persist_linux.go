package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// On a checkpointed volume, Persist is a durability point: after the
// msync, the library asks the daemon (OpPersist) and returns once a
// checkpoint holding every store made before the call is durable on
// disk. Concurrent callers of one client share a request (group commit):
// a caller that arrives while one is under way waits for the next, which
// carries every caller that arrived meanwhile; the daemon in turn shares
// checkpoints among the requests of all its clients.

// persistGroup runs the Persist requests of one device, one at a time,
// each on behalf of every caller waiting when it starts.
type persistGroup struct {
	mu      sync.Mutex
	running bool
	next    *persistRound
}

type persistRound struct {
	done chan struct{}
	err  error
}

// do waits for a round that starts after the call, run by send, or for
// ctx to end. The rounds run in a goroutine of their own, without the
// callers' cancellation: one caller giving up neither fails the round
// the others wait for nor drops their connection, and the checkpoint it
// asked for goes on.
func (g *persistGroup) do(ctx context.Context, send func(context.Context) error) error {
	g.mu.Lock()
	r := g.next
	if r == nil {
		r = &persistRound{done: make(chan struct{})}
		g.next = r
	}
	lead := !g.running
	g.running = true
	g.mu.Unlock()
	if lead {
		go g.run(context.WithoutCancel(ctx), send)
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return fmt.Errorf("daxsnap: persist: %w (the checkpoint asked for goes on)", ctx.Err())
	}
}

// run runs rounds until none waits.
func (g *persistGroup) run(ctx context.Context, send func(context.Context) error) {
	for {
		g.mu.Lock()
		cur := g.next
		g.next = nil
		if cur == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		cur.err = send(ctx)
		close(cur.done)
	}
}

// persistGroup is the group of device.
func (c *Client) persistGroup(device string) *persistGroup {
	c.mapsMu.Lock()
	defer c.mapsMu.Unlock()
	if c.persists == nil {
		c.persists = map[string]*persistGroup{}
	}
	g := c.persists[device]
	if g == nil {
		g = &persistGroup{}
		c.persists[device] = g
	}
	return g
}

// persist asks the daemon for a checkpoint of m's device, again after
// the daemon restarts (the new one adopts the mapping under its ID):
// Persist is idempotent, and a restart must not fail it.
func (c *Client) persist(ctx context.Context, m *Mapping) error {
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		err := c.persistOnce(ctx, m)
		if !errors.Is(err, errLost) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-c.stop:
			return err
		case <-time.After(wait):
		}
	}
}

// persistOnce asks the daemon for a checkpoint of m's device, through
// any live writable mapping of it in this client.
func (c *Client) persistOnce(ctx context.Context, m *Mapping) error {
	// The link first, without c.mu: the reconnection that brings it up
	// takes c.mu to hand the mappings over. A link it returns has them.
	l, err := c.connected(ctx)
	if err != nil {
		return fmt.Errorf("daxsnap: persist %s: %w", m.device, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.liveMapping(m)
	if !ok {
		return fmt.Errorf("daxsnap: persist %s: the mapping was recalled or closed: Access it again, then Persist", m.device)
	}
	r, fds, err := c.exchange(ctx, l, wire.SessionMsg{Op: wire.OpPersist, ID: id})
	closeFDs(fds)
	if err != nil {
		return fmt.Errorf("daxsnap: persist %s: %w", m.device, err)
	}
	if r.Op != wire.OpPersisted {
		return refused("persist", m.device, r)
	}
	if r.Durability != nil {
		m.setDurability(*r.Durability)
	}
	return nil
}

// liveMapping is the ID of m, or of another live writable mapping of its
// device, in this client.
func (c *Client) liveMapping(m *Mapping) (uint64, bool) {
	m.mu.Lock()
	id, live := m.id, m.mem != nil && !m.recalled
	m.mu.Unlock()
	if live {
		return id, true
	}
	c.mapsMu.Lock()
	defer c.mapsMu.Unlock()
	for id, o := range c.maps {
		if o.device == m.device && o.opts.Write {
			return id, true
		}
	}
	return 0, false
}

// setDurability records what Persist achieves now.
func (m *Mapping) setDurability(d wire.MapDurability) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checkpointed = d.Checkpointed
	if d.Text != "" {
		m.durability = d.Text
	}
}

// durabilityChanged applies an OpDurability the daemon sent unasked.
func (c *Client) durabilityChanged(msg wire.SessionMsg) {
	if msg.Durability == nil {
		return
	}
	c.mapsMu.Lock()
	m := c.maps[msg.ID]
	c.mapsMu.Unlock()
	if m != nil {
		m.setDurability(*msg.Durability)
	}
}
