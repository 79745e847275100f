package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// raw sends a request to the daemon without the client's help.
func raw(t *testing.T, socket, method, path, body string) (int, wire.ErrorBody, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(method, "http://daxsnap"+path, strings.NewReader(body))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb wire.ErrorBody
	json.Unmarshal(b, &eb)
	return resp.StatusCode, eb, string(b)
}

// Ensure that every error code the daemon can produce comes back with
// its HTTP status and a message that says what to do.
func TestDaemon_errorCodes(t *testing.T) {
	e := newEnv(t)
	path := e.region("r", 4*mib)
	e.create("dax", linear(path, 4096))
	e.create("top", "0 4096 linear /dev/mapper/dax 0")
	e.must("create empty", func() error { _, err := e.c.Create(bg, wire.DeviceCreate{Name: "empty", NoTable: true}); return err }())
	e.must("create ro", func() error {
		_, err := e.c.Create(bg, wire.DeviceCreate{Name: "ro", Table: "0 8 zero", ReadOnly: true})
		return err
	}())
	e.create("err", "0 8 error")

	_, err := e.c.Info(bg, "nope")
	wantCode(t, err, wire.CodeNotFound, "nope", "daxsnap ls")
	if !errors.Is(err, dm.ErrNotFound) {
		t.Errorf("errors.Is(%v, dm.ErrNotFound) = false across the socket", err)
	}
	_, err = e.c.Create(bg, wire.DeviceCreate{Name: "dax", Table: "0 8 zero"})
	wantCode(t, err, wire.CodeExists, "dax", "another name")
	_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: "r", Size: mib})
	wantCode(t, err, wire.CodeExists, "pmem remove r")
	_, err = e.c.Create(bg, wire.DeviceCreate{Name: "x"})
	wantCode(t, err, wire.CodeInvalidArgument, "no table given", "--notable")
	_, err = e.c.Create(bg, wire.DeviceCreate{Name: "x", Table: "0 8 linear"})
	wantCode(t, err, wire.CodeInvalidTable, "line 1 (linear)")
	_, err = e.c.Create(bg, wire.DeviceCreate{Name: "x", Table: "0 8 bogus"})
	wantCode(t, err, wire.CodeUnknownTarget, "bogus", "linear")
	err = e.c.Load(bg, "dax", wire.Load{Table: "0 4096 zero"})
	wantCode(t, err, wire.CodeDAXChange, "dax", "zero")
	err = e.c.Remove(bg, "dax", wire.Remove{})
	wantCode(t, err, wire.CodeBusy, "top", "/dev/mapper/dax")
	_, err = e.c.Rename(bg, "dax", wire.Rename{NewName: "ro"})
	wantCode(t, err, wire.CodeExists, "a device called ro exists", "another name")
	err = e.c.PmemRemove(bg, "r")
	wantCode(t, err, wire.CodeBusy, "dax", path)
	_, err = e.c.ReadData(bg, "empty", 0, 512)
	wantCode(t, err, wire.CodeNoTable, "load and resume a table")
	err = e.c.WriteData(bg, "ro", 0, []byte("x"))
	wantCode(t, err, wire.CodeReadOnly, "read-only")
	_, err = e.c.ReadData(bg, "dax", 4096*512, 1)
	wantCode(t, err, wire.CodeOutOfRange, "2097152")
	_, err = e.c.ReadData(bg, "err", 0, 512)
	wantCode(t, err, wire.CodeIO, "error target")
	_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: "huge", Size: 1 << 50})
	wantCode(t, err, wire.CodeNoSpace, "bytes free")
	_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: "disk", Size: mib, Dir: t.TempDir()})
	wantCode(t, err, wire.CodeInvalidArgument, "not on tmpfs or hugetlbfs")
	_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: "h", Size: 2 * mib, Hugetlb: true, Dir: "/dev/shm"})
	wantCode(t, err, wire.CodeInvalidArgument, "hugetlbfs")
	_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: "odd", Size: 1000})
	wantCode(t, err, wire.CodeInvalidArgument, "multiple", "use 4096")
	_, err = e.c.PmemCreate(bg, wire.PmemCreate{Name: "../x", Size: 4096})
	wantCode(t, err, wire.CodeInvalidArgument, "invalid region name")
	err = e.c.PmemRemove(bg, "nope")
	wantCode(t, err, wire.CodeNotFound, "pmem list")
}

// Ensure that tables cannot make a device sit under itself.
func TestDaemon_cycles(t *testing.T) {
	e := newEnv(t)
	e.create("a", "0 8 zero")
	e.create("b", "0 8 linear /dev/mapper/a 0")
	err := e.c.Load(bg, "a", wire.Load{Table: "0 8 linear /dev/mapper/b 0"})
	wantCode(t, err, wire.CodeInvalidTable, "cannot sit under itself")
	err = e.c.Load(bg, "a", wire.Load{Table: "0 8 linear /dev/mapper/a 0"})
	wantCode(t, err, wire.CodeInvalidTable, "the device itself")
	_, err = e.c.Create(bg, wire.DeviceCreate{Name: "c", Table: "0 8 linear /dev/mapper/nope 0"})
	wantCode(t, err, wire.CodeInvalidTable, "/dev/mapper/nope", "create it first")
}

// Ensure that malformed requests get 400 with a message, unknown routes
// 404 and wrong methods 405, all as JSON.
func TestDaemon_badRequests(t *testing.T) {
	e := newEnv(t)
	sock := e.d.SocketPath()
	for _, tc := range []struct {
		method, path, body string
		status             int
		code, fragment     string
	}{
		{"POST", "/v1/devices", "{", 400, wire.CodeInvalidArgument, "not the expected JSON"},
		{"POST", "/v1/devices", `{"name":"x","tabel":"0 8 zero"}`, 400, wire.CodeInvalidArgument, "unknown field"},
		{"POST", "/v1/devices", `{"name":"x","table":"0 8 zero"} {}`, 400, wire.CodeInvalidArgument, "after the JSON object"},
		{"POST", "/v1/devices", "", 400, wire.CodeInvalidArgument, "body is empty"},
		{"POST", "/v1/pmem", `{"name":"x","size":"4G"}`, 400, wire.CodeInvalidArgument, "size"},
		{"DELETE", "/v1/devices/x?force=maybe", "", 400, wire.CodeInvalidArgument, "force"},
		{"GET", "/v1/devices/x/data?offset=0", "", 400, wire.CodeInvalidArgument, "length"},
		{"GET", "/v1/nope", "", 404, wire.CodeNotFound, "no API route"},
		{"DELETE", "/v1/version", "", 405, wire.CodeMethod, "GET"},
	} {
		status, body, text := raw(t, sock, tc.method, tc.path, tc.body)
		if status != tc.status || body.Code != tc.code || !strings.Contains(body.Error, tc.fragment) {
			t.Errorf("%s %s %q: %d %s, want %d %s with %q", tc.method, tc.path, tc.body, status, text, tc.status, tc.code, tc.fragment)
		}
	}
}
