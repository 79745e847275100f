// Package daemontest starts and stops daemons for tests: the one rig the
// daemon's tests, its model and the CLI's tests share.
package daemontest

import (
	"context"
	"fmt"
	"time"

	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/daemon"
)

// T is what Start needs of a test: *testing.T, *testing.B and *rapid.T.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// ShutdownTimeout is how long Stop lets a daemon take to shut down: far
// more than it needs, so that a loaded machine does not fail a test.
const ShutdownTimeout = time.Minute

// Start starts a daemon on cfg and returns it with an API client on its
// socket; it fails t if the daemon does not start.
func Start(t T, cfg daemon.Config) (*daemon.Daemon, *apiclient.Client) {
	t.Helper()
	d, err := daemon.Start(cfg)
	if err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	return d, apiclient.New(d.SocketPath())
}

// Stop closes c (if not nil) and shuts d down (if not nil), allowing it
// ShutdownTimeout.
func Stop(d *daemon.Daemon, c *apiclient.Client) error {
	if c != nil {
		c.Close()
	}
	if d == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
