package api

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// slowMerge answers a merge after a while, unless the request's context
// ends first.
type slowMerge struct {
	stubService
	after time.Duration
}

func (s slowMerge) SnapshotMerge(ctx context.Context, name string, _ wire.SnapshotMerge) (wire.Snapshot, error) {
	select {
	case <-time.After(s.after):
		return wire.Snapshot{Name: name, State: wire.SnapshotMerged}, nil
	case <-ctx.Done():
		return wire.Snapshot{}, ctx.Err()
	}
}

// Ensure that a merge waited for longer than the read timeout is
// answered: the handler passes the request's context, which must end
// only when the client goes away, not with the timeouts that bound
// reading the request.
func TestServer_mergeWaitOutlivesReadTimeout(t *testing.T) {
	const timeout = time.Second
	s := NewServer(slowMerge{after: 3 * timeout}, Options{Limits: Limits{ReadTimeout: timeout}})
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://daxsnap/v1/snapshots/s/merge", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got wire.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK || got.State != wire.SnapshotMerged {
		t.Fatalf("merge waited for %v with a read timeout of %v: HTTP %d %+v %v", 4*timeout, timeout, resp.StatusCode, got, err)
	}
}
