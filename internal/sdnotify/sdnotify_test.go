package sdnotify_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/sdnotify"
)

func listen(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// Ensure that a notification reaches a path socket and an abstract one
// as one datagram, and that without $NOTIFY_SOCKET nothing is sent.
func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	abstract := fmt.Sprintf("@daxsnap-sdnotify-test-%d", os.Getpid())
	for _, addr := range []string{path, abstract} {
		c := listen(t, addr)
		t.Setenv(sdnotify.SocketEnv, addr)
		sent, err := sdnotify.Notify(sdnotify.Ready + "\n" + sdnotify.Status("serving  2\ndevices"))
		if !sent || err != nil {
			t.Fatalf("%s: sent %v, %v", addr, sent, err)
		}
		if got, want := receive(t, c), "READY=1\nSTATUS=serving 2 devices"; got != want {
			t.Fatalf("%s: got %q, want %q", addr, got, want)
		}
	}
	t.Setenv(sdnotify.SocketEnv, "")
	if sent, err := sdnotify.Notify(sdnotify.Ready); sent || err != nil {
		t.Fatalf("unset: sent %v, %v", sent, err)
	}
	t.Setenv(sdnotify.SocketEnv, "vsock:2:999")
	if _, err := sdnotify.Notify(sdnotify.Ready); err == nil {
		t.Fatal("vsock address: no error")
	}
}
