package daemon_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that a merge's wait ends when its context does, with
// context.Canceled, while the merge goes on to its end: in process, and
// across the socket, where the client going away ends the server's wait.
func TestSnapshotMerge_cancelledWait(t *testing.T) {
	for _, via := range []string{"process", "socket"} {
		t.Run(via, func(t *testing.T) {
			e := newEnv(t)
			var svc api.Service = e.c
			if via == "process" {
				svc = e.d.Service()
			}
			e.fileVol("vol", volSize)
			r := rand.New(rand.NewPCG(5, 6))
			img := randBytes(r, volSize)
			e.write("vol", 0, img)
			e.snap("vol", "s1")
			e.write("vol", 0, randBytes(r, 64<<10))

			// The merge's finish waits for release: the merge stays in
			// progress for as long as the test needs.
			reached, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			defer e.setFailStep(func(step string) error {
				if step == "finish-merge" {
					once.Do(func() { close(reached) })
					<-release
				}
				return nil
			})()
			releaseOnce := sync.OnceFunc(func() { close(release) })
			defer releaseOnce()

			ctx, cancel := context.WithCancel(bg)
			done := make(chan error, 1)
			go func() {
				_, err := svc.SnapshotMerge(ctx, "s1", wire.SnapshotMerge{})
				done <- err
			}()
			select {
			case <-reached:
			case err := <-done:
				t.Fatalf("merge returned before its finish: %v", err)
			case <-time.After(time.Minute):
				t.Fatal("the merge did not reach its finish in a minute")
			}
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("merge with its context cancelled: %v, want context.Canceled", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("the merge's wait did not end in a minute after its context was cancelled")
			}
			if via == "socket" {
				// The server's handler has returned too: it logs the request then.
				e.waitLog("path=/v1/snapshots/s1/merge")
			}

			releaseOnce()
			e.waitLog(`msg="snapshot merged"`)
			e.wantDevices("vol")
			e.wantData("vol", img)
		})
	}
}

// waitLog waits until the daemon's log has a line containing s.
func (e *env) waitLog(s string) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(e.logs.String(), s) {
		if time.Now().After(deadline) {
			e.t.Fatalf("no log line with %q in a minute", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
