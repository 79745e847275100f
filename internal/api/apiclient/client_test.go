package apiclient

import (
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// serve runs a server for svc on a unix socket and returns a client.
func serve(t *testing.T, svc api.Service, o api.Options) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := api.NewServer(svc, o)
	go s.Serve(l)
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	c := New(sock)
	t.Cleanup(c.Close)
	return c
}

// Ensure that every client call reaches the service with its arguments.
func TestClient_verbs(t *testing.T) {
	f := &fakeService{}
	c := serve(t, f, api.Options{})
	c.PmemCreate(bg, wire.PmemCreate{Name: "r", Size: 4096, Dir: "/d", Hugetlb: true})
	c.PmemRemove(bg, "r")
	c.Create(bg, wire.DeviceCreate{Name: "a b", UUID: "u", Table: "0 8 zero", ReadOnly: true})
	uid, gid := uint32(65534), uint32(0)
	c.Create(bg, wire.DeviceCreate{Name: "owned", NoTable: true, UID: &uid, GID: &gid, Mode: "0640"})
	c.Load(bg, "a/b", wire.Load{Table: "t"})
	c.Suspend(bg, "a", wire.Suspend{NoFlush: true})
	c.Resume(bg, "a")
	c.Clear(bg, "a")
	c.WipeTable(bg, "a")
	c.Remove(bg, "a", wire.Remove{Force: true, Deferred: true})
	c.Rename(bg, "a", wire.Rename{NewName: "b"})
	c.Message(bg, "a", wire.Message{Sector: 7, Args: []string{"x", "y"}})
	c.WriteData(bg, "a", 512, []byte("hello"))
	want := []string{
		"pmem create r 4096 /d true", "pmem remove r",
		`create a b uuid=u ro=true notable=false owner=-:-:"" table="0 8 zero"`,
		`create owned uuid= ro=false notable=true owner=65534:0:"0640" table=""`, `load a/b "t"`,
		"suspend a noflush=true", "resume a", "clear a", "wipe a",
		"remove a force=true deferred=true", "rename a b", "message a 7 [x y]", "write a 512 5",
	}
	if got := f.Calls(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	txt, err := c.Table(bg, "a", true)
	if err != nil || !txt.Inactive || txt.Text != "0 8 zero \n" {
		t.Fatalf("table = %+v, %v", txt, err)
	}
	p, err := c.ReadData(bg, "a", 0, 1000)
	if err != nil || len(p) != 1000 {
		t.Fatalf("read = %d bytes, %v", len(p), err)
	}
}

// Ensure that error classes become codes and statuses, and come back as
// the same classes on the client side.
func TestClient_errorClasses(t *testing.T) {
	c := serve(t, &fakeService{}, api.Options{})
	for _, tc := range []struct {
		name   string
		code   string
		status int
		class  error
	}{
		{"busy", wire.CodeBusy, 409, dm.ErrBusy},
		{"dax", wire.CodeDAXChange, 409, dm.ErrDAXChange},
		{"bad", wire.CodeInvalidTable, 400, dm.ErrInvalidTable},
		{"missing", wire.CodeNotFound, 404, dm.ErrNotFound},
		{"taken", wire.CodeExists, 409, dm.ErrExists},
		{"empty", wire.CodeNoTable, 409, dm.ErrNoTable},
		{"boom", wire.CodeInternal, 500, nil},
	} {
		_, err := c.Info(bg, tc.name)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != tc.code || ae.Status != tc.status || ae.Message != failures[tc.name].Error() {
			t.Errorf("%s: %#v, want %s %d", tc.name, err, tc.code, tc.status)
		}
		if tc.class != nil && !errors.Is(err, tc.class) {
			t.Errorf("%s: errors.Is(err, %v) is false", tc.name, tc.class)
		}
	}
}

// Ensure that the dial failure tells the user to start the daemon.
func TestClient_unreachable(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Version(bg)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "start it with `daxsnap serve`") {
		t.Fatalf("err = %v", err)
	}
}
