package session_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client"
)

// TestMap_DaemonRestart: a Map asked while the daemon restarts waits for
// the next daemon and maps there, and the client's mapping made before
// the restart is adopted by it. Map held the client's lock while waiting
// for the connection, which the reconnection needs to hand the mappings
// over: neither went on until Map's context ended.
func TestMap_DaemonRestart(t *testing.T) {
	r := newRig(t, "mem")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	c, old := dialMap(t, r, volSize)
	if err := r.srv.Close(); err != nil { // the daemon stops
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type mapped struct {
		m   *client.Mapping
		err error
	}
	done := make(chan mapped, 1)
	go func() {
		m, err := c.Map(ctx, "vol", client.MapOptions{Length: volSize, Write: true})
		done <- mapped{m, err}
	}()
	select {
	case got := <-done:
		t.Fatalf("Map returned with no daemon running (%v), want it to wait for the next", got.err)
	case <-time.After(100 * time.Millisecond): // Map waits for a daemon
	}
	srv := r.restartServer(t)
	var got mapped
	select {
	case got = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("Map did not return in 2 minutes after the daemon restarted")
	}
	if got.err != nil {
		t.Fatalf("Map across a daemon restart = %v, want the mapping from the new daemon", got.err)
	}
	defer got.m.Close()
	if c.Reconnects() == 0 || srv.Stats().Adopted.Load() == 0 {
		t.Fatalf("%d reconnections, %d adopted: want the mapping made before the restart adopted by the new daemon",
			c.Reconnects(), srv.Stats().Adopted.Load())
	}
	for _, m := range []*client.Mapping{old, got.m} {
		if err := m.Access(ctx, func(mem []byte) error { mem[0]++; return nil }); err != nil {
			t.Fatalf("Access after the restart: %v", err)
		}
	}
	if b := readAll(t, vol)[0]; b != 2 {
		t.Fatalf("vol byte 0 = %d after a store through each mapping, want 2", b)
	}
}
