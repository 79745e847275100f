package session_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/daxsnap/daxsnap/client"
	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that Config.Authorize is asked for every map request, with the
// peer's credentials, the device and whether the map writes, and that its
// refusal reaches the client as permission_denied with its text while the
// session goes on serving.
func TestAuthorize_perRequest(t *testing.T) {
	r := newRig(t, "mem")
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	type call struct {
		peer  access.Peer
		dev   string
		write bool
	}
	var mu sync.Mutex
	var calls []call
	srv, err := session.Listen(session.Config{Socket: filepath.Join(t.TempDir(), "auth.sock"), Lookup: r.m.Get,
		Authorize: func(p access.Peer, dev *dm.Device, write bool) error {
			mu.Lock()
			calls = append(calls, call{p, dev.Name(), write})
			mu.Unlock()
			if write {
				return fmt.Errorf("%w: no writable maps of %s here", access.ErrPermission, dev.Name())
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })

	ctx := context.Background()
	c, err := client.Dial(ctx, srv.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Map(ctx, "vol", client.MapOptions{Length: volSize, Write: true})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != wire.CodePermission || !strings.Contains(ce.Message, "no writable maps of vol here") {
		t.Fatalf("write map: %v, want permission_denied with Authorize's text", err)
	}
	if _, err := c.Map(ctx, "nope", client.MapOptions{Length: volSize}); !errors.As(err, &ce) || ce.Code != wire.CodeNotFound {
		t.Fatalf("map of a missing device: %v, want not_found before any authorization", err)
	}
	m, err := c.Map(ctx, "vol", client.MapOptions{Length: volSize})
	if err != nil {
		t.Fatalf("read map after a refusal: %v", err)
	}
	m.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || calls[0].dev != "vol" || !calls[0].write || calls[1].write {
		t.Fatalf("Authorize calls %+v, want vol for write, then vol for read", calls)
	}
	p := calls[0].peer
	if p.PID != os.Getpid() || p.UID != uint32(os.Geteuid()) || p.GID != uint32(os.Getegid()) {
		t.Errorf("peer %+v, want pid %d uid %d gid %d", p, os.Getpid(), os.Geteuid(), os.Getegid())
	}
	if n := srv.Stats().Refusals.Load(); n != 2 {
		t.Errorf("refusals = %d, want 2 (permission, not found)", n)
	}
}
