package session_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
)

// Ensure that Server.Close does not return while a fault handler is still
// letting go of a mapping its client just unmapped: the device close it
// starts is counted before Close waits for such closes (the daemon's
// shutdown relies on it; the race detector flagged the late count as a
// data race on the WaitGroup at a daemon's SIGTERM).
func TestClose_WaitsForUnmappingHandler(t *testing.T) {
	r := newRig(t, "mem")
	vol := r.create(t, "vol", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	opens := vol.Info().OpenCount
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map vol 0 %d rw", volSize)
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.setUnmapHook(func() {
		once.Do(func() { close(reached) })
		<-release
	})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	defer releaseOnce()
	c.Send("unmap")
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the fault handler did not see the client's unmap within a minute")
	}
	closed := make(chan error, 1)
	go func() { closed <- r.srv.Close() }()
	// Give a wrong Close ample time to return early; a right one cannot
	// return before the handler goes on (or dropWait, 5 s, has passed).
	select {
	case <-closed:
		t.Error("Server.Close returned while a fault handler was still letting go of its unmapped mapping")
		releaseOnce()
	case <-time.After(500 * time.Millisecond):
		releaseOnce()
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
	}
	if n := vol.Info().OpenCount; n != opens {
		t.Errorf("open count of vol after Server.Close: %d, want %d (the unmapped mapping's hold released)", n, opens)
	}
	c.Wait(time.Minute)
}
