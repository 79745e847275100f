package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
)

// Ensure that `serve --metrics-addr` serves /metrics on that address to
// a plain HTTP GET, and logs the address as text.
func TestCLI_serveMetricsAddr(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // free for serve (a port another test takes meanwhile fails the start, with a message)
	serve, stderr := daxsnapProcess(t, "serve", "--state", t.TempDir(), "--fuse", "", "--metrics-addr", addr)
	defer serve.Process.Kill()
	var body string
	waitFor(t, "/metrics on "+addr, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(body, "# TYPE daxsnap_dax_sessions gauge") {
		t.Errorf("GET /metrics on %s lacks daxsnap_dax_sessions:\n%s", addr, body)
	}
	serve.Process.Signal(syscall.SIGTERM)
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr)
	}
	if want := `msg="serving metrics" addr=` + addr + " "; !strings.Contains(stderr.String(), want) {
		t.Errorf("the log lacks %q:\n%s", want, stderr)
	}
}
