package session_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
)

// TestPersist_Checkpointed: on a checkpointed volume, Mapping.Persist
// reaches the daemon's Persist hook after the stores made before it
// (the hook sees them in the volume), and the mapping learns that the
// volume became checkpointed, or stopped being, without mapping again.
func TestPersist_Checkpointed(t *testing.T) {
	var on atomic.Bool
	var mu sync.Mutex
	var seen []byte // the volume's first bytes as each Persist found them
	var fail atomic.Bool
	r := newRigWith(t, 4*mib, func(c *session.Config) {
		c.Durability = func(dev *dm.Device) (string, bool) {
			if on.Load() {
				return "checkpointed to /img", true
			}
			return "", false
		}
		c.Persist = func(ctx context.Context, dev *dm.Device) error {
			if fail.Load() {
				return fmt.Errorf("%w: image disk full", dm.ErrNoSpace)
			}
			b := make([]byte, 8)
			if _, err := dev.ReadAt(b, 0); err != nil {
				return err
			}
			mu.Lock()
			seen = append(seen, b[0])
			mu.Unlock()
			return nil
		}
	}, "mem")
	dev := r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	ctx := context.Background()
	_, m := dialMap(t, r, volSize)
	if d := m.Durability(); !strings.Contains(d, "volatile") {
		t.Fatalf("durability before checkpoints = %q, want volatile", d)
	}
	if err := m.Persist(0, 8); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 0 {
		t.Fatalf("Persist on a volatile volume asked the daemon (%d times)", len(seen))
	}

	on.Store(true)
	r.srv.DurabilityChanged(dev, "volatile memory")
	waitDurability(t, m, "checkpointed", "turned on")
	for i := byte(1); i <= 3; i++ {
		err := m.Access(ctx, func(mem []byte) error { mem[0] = i; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Persist(0, 1); err != nil {
			t.Fatalf("persist %d: %v", i, err)
		}
	}
	mu.Lock()
	got := string(seen)
	mu.Unlock()
	if got != "\x01\x02\x03" {
		t.Fatalf("the hook saw first bytes %q, want each Persist's store before it: 1, 2, 3", got)
	}

	fail.Store(true)
	if err := m.Persist(0, 1); !errors.Is(err, client.ErrNoSpace) || !strings.Contains(err.Error(), "image disk full") {
		t.Fatalf("persist with a failing checkpoint = %v, want ErrNoSpace naming the cause", err)
	}

	on.Store(false)
	r.srv.DurabilityChanged(dev, "volatile memory")
	waitDurability(t, m, "volatile", "turned off")
}

// TestPersist_ContextEnds: PersistContext gives up when its context ends
// while the checkpoint it asked for is still being taken, and that
// neither fails a Persist waiting beside it nor drops the session.
func TestPersist_ContextEnds(t *testing.T) {
	gate := make(chan struct{})
	var calls atomic.Int64
	r := newRigWith(t, 4*mib, func(c *session.Config) {
		c.Durability = func(*dm.Device) (string, bool) { return "checkpointed to /img", true }
		c.Persist = func(ctx context.Context, dev *dm.Device) error {
			calls.Add(1)
			<-gate
			return nil
		}
	}, "mem")
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	ctx := context.Background()
	c, m := dialMap(t, r, volSize)

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	patient := make(chan error, 1)
	go func() { patient <- m.Persist(0, 1) }()
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- m.PersistContext(short, 0, 1) }()
	select {
	case err := <-gaveUp:
		if !errors.Is(err, context.DeadlineExceeded) {
			close(gate)
			t.Fatalf("PersistContext with its context ended = %v, want DeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		close(gate)
		t.Fatal("PersistContext did not return in 30 s after its context ended (100 ms)")
	}
	close(gate)
	select {
	case err := <-patient:
		if err != nil {
			t.Fatalf("a Persist waiting beside the one that gave up = %v, want nil", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a Persist waiting beside the one that gave up did not return in a minute")
	}
	if err := m.Persist(0, 1); err != nil {
		t.Fatalf("Persist after another gave up = %v", err)
	}
	if n := calls.Load(); n < 2 {
		t.Fatalf("the daemon's Persist ran %d times, want the first and the last", n)
	}
	if n := c.Reconnects(); n != 0 {
		t.Errorf("%d reconnections: a caller giving up dropped the session", n)
	}
}

// dialMap connects a client to r's daemon and maps the first size bytes
// of vol writable; both close when the test ends.
func dialMap(tb testing.TB, r *rig, size int64) (*client.Client, *client.Mapping) {
	tb.Helper()
	c, err := client.Dial(context.Background(), r.srv.Socket())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	m, err := c.Map(context.Background(), "vol", client.MapOptions{Length: size, Write: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return c, m
}

// waitDurability waits up to a minute for m's durability to say want,
// after checkpoints were turned on or off (what).
func waitDurability(t *testing.T, m *client.Mapping, want, what string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(m.Durability(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("durability = %q a minute after checkpoints were %s, want it to say %q", m.Durability(), what, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPersist_DaemonRestart: a Persist under way when the daemon stops
// waits for the next one, which adopts the mapping, and asks it again.
func TestPersist_DaemonRestart(t *testing.T) {
	entered, gate := make(chan struct{}), make(chan struct{})
	checkpointed := func(c *session.Config) {
		c.Durability = func(*dm.Device) (string, bool) { return "checkpointed to /img", true }
	}
	r := newRigWith(t, 4*mib, func(c *session.Config) {
		checkpointed(c)
		c.Persist = func(ctx context.Context, dev *dm.Device) error {
			close(entered)
			<-gate
			return nil
		}
	}, "mem")
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	c, m := dialMap(t, r, volSize)
	done := make(chan error, 1)
	go func() { done <- m.Persist(0, 1) }()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- r.srv.Close() }() // the daemon stops mid-Persist
	time.Sleep(100 * time.Millisecond)
	close(gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("Persist returned with no daemon running (%v), want it to wait for the next", err)
	case <-time.After(100 * time.Millisecond):
	}
	var asked atomic.Int64
	r.restartServerWith(t, func(c *session.Config) {
		checkpointed(c)
		c.Persist = func(context.Context, *dm.Device) error { asked.Add(1); return nil }
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Persist across a daemon restart = %v, want nil", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Persist did not return in a minute after the daemon restarted")
	}
	if asked.Load() == 0 || c.Reconnects() == 0 {
		t.Fatalf("the new daemon was asked %d times, %d reconnections: want the Persist asked again there", asked.Load(), c.Reconnects())
	}
}

// TestPersist_CloseEndsHook: the server's Close ends the context of a
// Persist under way, so that a checkpoint that hangs does not hold the
// daemon's stop. The hook got context.Background, and Close waited for
// it forever.
func TestPersist_CloseEndsHook(t *testing.T) {
	entered, ended := make(chan struct{}), make(chan error, 1)
	r := newRigWith(t, 4*mib, func(c *session.Config) {
		c.Durability = func(*dm.Device) (string, bool) { return "checkpointed to /img", true }
		c.Persist = func(ctx context.Context, dev *dm.Device) error {
			close(entered)
			<-ctx.Done() // a checkpoint that hangs until it is given up
			ended <- ctx.Err()
			return fmt.Errorf("waiting for a checkpoint (it goes on): %w", ctx.Err())
		}
	}, "mem")
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	_, m := dialMap(t, r, volSize)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.PersistContext(ctx, 0, 1) // waits for the next daemon: cancelled at the end
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- r.srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the server's Close did not return in a minute while a Persist hook waited on its context")
	}
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("the Persist hook's context ended with %v, want Canceled", err)
	}
}
