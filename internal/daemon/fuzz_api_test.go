package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/daemon/daemontest"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// fuzzRoutes are every route of the control API; "{}" takes the fuzzed name.
var fuzzRoutes = []struct{ method, path string }{
	{"GET", "/v1/version"}, {"GET", "/v1/targets"}, {"GET", "/v1/sessions"},
	{"GET", "/v1/pmem"}, {"POST", "/v1/pmem"}, {"GET", "/v1/pmem/{}"}, {"DELETE", "/v1/pmem/{}"},
	{"GET", "/v1/devices"}, {"POST", "/v1/devices"}, {"GET", "/v1/devices/{}"}, {"DELETE", "/v1/devices/{}"},
	{"POST", "/v1/devices/{}/load"}, {"POST", "/v1/devices/{}/suspend"}, {"POST", "/v1/devices/{}/resume"},
	{"POST", "/v1/devices/{}/clear"}, {"POST", "/v1/devices/{}/wipe_table"}, {"POST", "/v1/devices/{}/rename"},
	{"POST", "/v1/devices/{}/message"}, {"GET", "/v1/devices/{}/table"}, {"GET", "/v1/devices/{}/status"},
	{"GET", "/v1/devices/{}/data"}, {"PUT", "/v1/devices/{}/data"},
	{"GET", "/v1/snapshots"}, {"POST", "/v1/snapshots"}, {"GET", "/v1/snapshots/{}"}, {"DELETE", "/v1/snapshots/{}"},
	{"POST", "/v1/snapshots/{}/merge"}, {"POST", "/v1/snapshots/{}/extend"},
	{"PATCH", "/v1/devices/{}"}, {"GET", "/v1/nope/{}"},
}

// fuzzDaemon is a daemon with a baseline of devices (a region, a linear
// device on it, a zero device, a snapshot), rebuilt whenever a request
// changed what the state file records, so each input meets the baseline.
type fuzzDaemon struct {
	cfg      daemon.Config
	logs     *testutil.LogBuffer
	d        *daemon.Daemon
	hc       *http.Client
	baseline string
	allowed  []string // path prefixes a request may name
}

func (z *fuzzDaemon) start() error {
	z.logs = &testutil.LogBuffer{}
	z.cfg.Logger = slog.New(slog.NewTextHandler(z.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := daemon.Start(z.cfg)
	if err != nil {
		return err
	}
	z.d = d
	sock := d.SocketPath()
	z.hc = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}, Timeout: time.Minute}
	return nil
}

func (z *fuzzDaemon) stop() error {
	if z.d == nil {
		return nil
	}
	z.hc.CloseIdleConnections()
	err := daemontest.Stop(z.d, nil)
	z.d = nil
	return err
}

// reset starts a daemon on empty directories and makes the baseline.
func (z *fuzzDaemon) reset() error {
	if err := z.stop(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	for _, dir := range []string{z.cfg.StateDir, z.cfg.PmemDir} {
		ents, _ := os.ReadDir(dir)
		for _, ent := range ents {
			if err := os.RemoveAll(filepath.Join(dir, ent.Name())); err != nil {
				return err
			}
		}
	}
	if err := z.start(); err != nil {
		return err
	}
	c := apiclient.New(z.d.SocketPath())
	defer c.Close()
	p, err := c.PmemCreate(bg, wire.PmemCreate{Name: "vol-mem", Size: 1 << 20})
	if err != nil {
		return err
	}
	for _, req := range []wire.DeviceCreate{{Name: "vol", Table: linear(p.Path, 2048)}, {Name: "z", Table: "0 8 zero"}} {
		if _, err := c.Create(bg, req); err != nil {
			return err
		}
	}
	if _, err := c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: "s", COWSize: 1 << 20}); err != nil {
		return err
	}
	z.baseline, err = daemon.StateFingerprint(z.d)
	return err
}

var devNumber = regexp.MustCompile(`^\d+:\d+$`)

// safe reports whether a request touches only the fuzz's own files and
// stays small: every path it names is under the test's directories (or
// a daxsnap device), no major:minor, no huge pmem or hugetlbfs default
// directory, no background merge whose state changes after the reply.
func (z *fuzzDaemon) safe(body []byte) bool {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return true // refused before any verb runs
	}
	ok := true
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			for _, tok := range append(strings.Fields(v), v) {
				if devNumber.MatchString(tok) || strings.Contains(tok, "..") && strings.Contains(tok, "/") {
					ok = false
				}
				if strings.Contains(tok, "/") && !z.under(tok) {
					ok = false
				}
			}
		case float64:
			if v > 64<<20 && v < 1<<62 {
				ok = false // would really allocate it
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		case map[string]any:
			for k, x := range v {
				if strings.EqualFold(k, "hugetlb") || strings.EqualFold(k, "no_wait") {
					ok = false
				}
				walk(x)
			}
		}
	}
	walk(v)
	return ok
}

func (z *fuzzDaemon) under(p string) bool {
	for _, a := range z.allowed {
		if strings.HasPrefix(p, a) {
			return true
		}
	}
	return false
}

// FuzzAPI sends arbitrary requests (route, name, query, JSON body) to a
// real daemon through its socket, so that decoding, routing and the verbs
// all run: it never panics or answers an internal error, every refusal is
// a JSON error with a message, and after every request the daemon's
// devices and regions match the state file and obey the name rules.
func FuzzAPI(f *testing.F) {
	work := f.TempDir()
	f.Chdir(work) // relative paths in tables name nothing
	z := &fuzzDaemon{cfg: daemon.Config{StateDir: f.TempDir(), PmemDir: pmemDir(f), Version: "fuzz"}}
	z.allowed = []string{z.cfg.PmemDir + "/", z.cfg.StateDir + "/", work + "/", daemon.MapperPrefix}
	if err := z.reset(); err != nil {
		f.Fatalf("baseline: %v", err)
	}
	f.Cleanup(func() { z.stop() })
	region := filepath.Join(z.cfg.PmemDir, daemon.RegionSubdir, "vol-mem")
	seeds := []struct {
		route       string
		name, query string
		body        string
	}{
		{"POST /v1/devices", "", "", `{"name":"a","table":"0 8 zero"}`},
		{"POST /v1/devices", "", "", `{"name":"a b","table":"0 8 zero"}`},
		{"POST /v1/devices", "", "", `{"name":"a\nb","table":"0 8 zero","mode":"99999"}`},
		{"POST /v1/devices", "", "", `{"name":"l","table":"0 2048 linear ` + region + ` 0","uid":65534,"mode":"0640"}`},
		{"POST /v1/devices", "", "", `{"name":"m","table":"0 2048 linear /dev/mapper/z 0"}`},
		{"POST /v1/pmem", "", "", `{"name":"r","size":4096}`},
		{"POST /v1/pmem", "", "", `{"name":"r","size":9223372036854775807}`},
		{"POST /v1/pmem", "", "", `{"name":"r","size":4096,"dir":"` + z.cfg.PmemDir + `"}`},
		{"DELETE /v1/pmem/{}", "vol-mem", "", ``},
		{"POST /v1/snapshots", "", "", `{"origin":"vol","name":"t","cow_size":9223372036854775807}`},
		{"POST /v1/snapshots", "", "", `{"origin":"vol","name":"t","chunk_size":8192,"transient":true}`},
		{"POST /v1/snapshots", "", "", `{"origin":"z","name":"t"}`},
		{"POST /v1/snapshots", "", " ", `0`}, // a space in the request line: skipped (Go's server answers it)
		{"POST /v1/snapshots/{}/merge", "s", "", `{}`},
		{"POST /v1/snapshots/{}/extend", "s", "", `{"add":4096}`},
		{"DELETE /v1/snapshots/{}", "s", "force", ``},
		{"POST /v1/devices/{}/load", "z", "", `{"table":"0 16 zero"}`},
		{"POST /v1/devices/{}/load", "vol", "", `{"table":"0 16 error"}`},
		{"POST /v1/devices/{}/suspend", "vol", "", `{"nolockfs":true}`},
		{"POST /v1/devices/{}/resume", "vol", "", ``},
		{"POST /v1/devices/{}/clear", "z", "", ``},
		{"POST /v1/devices/{}/wipe_table", "z", "", ``},
		{"POST /v1/devices/{}/rename", "z", "", `{"new_name":"y"}`},
		{"POST /v1/devices/{}/rename", "vol", "", `{"new_name":"w"}`},
		{"POST /v1/devices/{}/message", "s", "", `{"sector":0,"args":["status"]}`},
		{"DELETE /v1/devices/{}", "z", "deferred", ``},
		{"DELETE /v1/devices/{}", "vol-real", "force", ``},
		{"GET /v1/devices/{}/data", "vol", "offset=0&length=512", ``},
		{"GET /v1/devices/{}/data", "vol", "offset=9223372036854775807&length=512", ``},
		{"PUT /v1/devices/{}/data", "vol", "offset=4096", `hello`},
		{"PUT /v1/devices/{}/data", "s", "offset=-1", `x`},
		{"GET /v1/devices/{}/table", "vol", "inactive", ``},
		{"GET /v1/snapshots/{}", "s", "", ``},
	}
	for _, s := range seeds {
		i := routeIndex(s.route)
		if i < 0 {
			f.Fatalf("seed route %s is not in fuzzRoutes", s.route)
		}
		f.Add(uint8(i), s.name, s.query, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, route uint8, name, query string, body []byte) {
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		if !z.safe(body) {
			t.Skip("names files outside the test or asks for a large allocation")
		}
		if z.d == nil {
			if err := z.reset(); err != nil {
				t.Fatalf("baseline: %v", err)
			}
		}
		u := strings.ReplaceAll(r.path, "{}", url.PathEscape(name))
		req, err := http.NewRequest(r.method, "http://daxsnap"+u+"?"+query, bytes.NewReader(body))
		if err != nil {
			t.Skip("not a URL")
		}
		if strings.ContainsFunc(req.URL.RawQuery, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			// The client sends such a query as it is, which breaks the
			// request line: Go's HTTP server answers a plain 400 before
			// any handler runs, as it does for any malformed request.
			t.Skip("a space or control character in the request line")
		}
		resp, err := z.hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v (did the daemon die?)\n%s", r.method, u, err, z.logs)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			var eb wire.ErrorBody
			if err := json.Unmarshal(raw, &eb); err != nil || eb.Code == "" || eb.Error == "" {
				t.Fatalf("%s %s?%s %q: status %d with body %q, want a JSON error with a code and a message", r.method, u, query, body, resp.StatusCode, raw)
			}
			if eb.Code == wire.CodeInternal {
				t.Fatalf("%s %s?%s %q: internal error: %s\n%s", r.method, u, query, body, eb.Error, z.logs)
			}
		}
		if err := daemon.CheckConsistency(z.d); err != nil {
			t.Fatalf("after %s %s?%s %q (status %d %s): %v\n%s", r.method, u, query, body, resp.StatusCode, raw, err, z.logs)
		}
		if fp, err := daemon.StateFingerprint(z.d); err != nil || fp != z.baseline {
			if err := z.reset(); err != nil {
				t.Fatalf("rebuild the baseline after %s %s %q: %v\n%s", r.method, u, body, err, z.logs)
			}
		}
	})
}

func routeIndex(route string) int {
	for i, r := range fuzzRoutes {
		if r.method+" "+r.path == route {
			return i
		}
	}
	return -1
}
