package session_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	srv, c := serveAndDial(t, session.Config{Lookup: r.m.Get, OnRemove: r.m.OnRemove, Authorize: func(p access.Peer, dev *dm.Device, need access.Access) error {
		write := need&access.Write != 0
		mu.Lock()
		calls = append(calls, call{p, dev.Name(), write})
		mu.Unlock()
		if write {
			return fmt.Errorf("%w: no writable maps of %s here", access.ErrPermission, dev.Name())
		}
		return nil
	}})
	ctx := context.Background()
	_, err := c.Map(ctx, "vol", client.MapOptions{Length: volSize, Write: true})
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

// Ensure that Config.AuthorizeFile is asked, after Authorize, once per
// file whose descriptor a map hands out, with the file as the table names
// it and whether the map writes, and that its refusal reaches the client
// as permission_denied with its text: a descriptor reaches the whole
// file, not only the device's range.
func TestAuthorizeFile_everyFile(t *testing.T) {
	r := newRig(t, "mem1", "mem2")
	half := sectors / 2
	r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n%d %d linear %s 0\n", half, r.path("mem1"), half, half, r.path("mem2")))
	type call struct {
		path  string
		write bool
	}
	var mu sync.Mutex
	var calls []call
	_, c := serveAndDial(t, session.Config{Lookup: r.m.Get, OnRemove: r.m.OnRemove, Authorize: func(access.Peer, *dm.Device, access.Access) error { return nil },
		AuthorizeFile: func(p access.Peer, dev *dm.Device, path string, fd int, need access.Access) error {
			write := need&access.Write != 0
			mu.Lock()
			calls = append(calls, call{path, write})
			mu.Unlock()
			if write && path == r.path("mem2") {
				return fmt.Errorf("%w: %s reaches all of %s", access.ErrPermission, dev.Name(), path)
			}
			return nil
		}})
	ctx := context.Background()
	_, err := c.Map(ctx, "vol", client.MapOptions{Length: volSize, Write: true})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != wire.CodePermission || !strings.Contains(ce.Message, "vol reaches all of "+r.path("mem2")) {
		t.Fatalf("write map across mem2: %v, want permission_denied with AuthorizeFile's text", err)
	}
	m, err := c.Map(ctx, "vol", client.MapOptions{Length: volSize})
	if err != nil {
		t.Fatalf("read map: %v", err)
	}
	m.Close()
	mu.Lock()
	defer mu.Unlock()
	want := []call{{r.path("mem1"), true}, {r.path("mem2"), true}, {r.path("mem1"), false}, {r.path("mem2"), false}}
	if !slices.Equal(calls, want) {
		t.Fatalf("AuthorizeFile calls %+v, want %+v", calls, want)
	}
}

// Ensure that without Config.AuthorizeFile a file's own owner and mode
// decide: uid 65534 may not have root's 0600 file, may read a 0644 one
// but not write it, and the daemon's uid may have any.
func TestAuthorizeFile_defaultByFileMode(t *testing.T) {
	r := newRig(t, "mem")
	dev := r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	f, err := os.Open(r.path("mem"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nobody := access.Peer{PID: 1, UID: 65534, GID: 65534}
	auth := session.ByFileMode(uint32(os.Geteuid()))
	err = auth(nobody, dev, r.path("mem"), int(f.Fd()), access.Read)
	if !errors.Is(err, access.ErrPermission) || !strings.Contains(err.Error(), "whole file") || !strings.Contains(err.Error(), "mode 0600") {
		t.Errorf("uid 65534, root's 0600 file: %v, want refused by the file's mode", err)
	}
	if err := os.Chmod(r.path("mem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := auth(nobody, dev, r.path("mem"), int(f.Fd()), access.Read); err != nil {
		t.Errorf("uid 65534, read of a 0644 file: %v, want allowed", err)
	}
	if err := auth(nobody, dev, r.path("mem"), int(f.Fd()), access.Read|access.Write); !errors.Is(err, access.ErrPermission) {
		t.Errorf("uid 65534, write of a 0644 file: %v, want refused", err)
	}
	if err := auth(access.Peer{UID: uint32(os.Geteuid())}, dev, r.path("mem"), int(f.Fd()), access.Read|access.Write); err != nil {
		t.Errorf("the daemon's uid: %v, want allowed", err)
	}
}

// serveAndDial serves cfg on a socket of its own and connects a client;
// both end with the test.
func serveAndDial(t *testing.T, cfg session.Config) (*session.Server, *client.Client) {
	t.Helper()
	cfg.Socket = filepath.Join(t.TempDir(), "auth.sock")
	srv, err := session.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	c, err := client.Dial(context.Background(), srv.Socket())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return srv, c
}
