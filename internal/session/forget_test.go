package session_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/client/clienttest"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
)

// TestServer_ForgetsRemovedDevices: the server keeps state for each
// device mapped (or recalled) through it, and drops it when the device
// is removed, so a daemon that creates, maps and removes devices all day
// does not pin every device it ever had. Devices still there keep
// theirs.
func TestServer_ForgetsRemovedDevices(t *testing.T) {
	const devices = 8
	r := newRig(t, "mem")
	keep := r.create(t, "keep", fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
	c := clienttest.Start(t, r.srv.Socket())
	c.Do("map keep 0 %d rw", volSize)
	for i := range devices {
		name := fmt.Sprintf("vol%d", i)
		dev := r.create(t, name, fmt.Sprintf("0 %d linear %s 0\n", sectors, r.path("mem")))
		if i%2 == 0 {
			c2 := clienttest.Start(t, r.srv.Socket())
			c2.Do("map %s 0 %d rw", name, volSize)
			c2.Do("unmap")
			c2.Do("quit")
			c2.Wait(time.Minute)
		} else {
			release, err := r.srv.Recall(dev, time.Minute, "test")
			if err != nil {
				t.Fatalf("recall %s: %v", name, err)
			}
			release()
		}
		// The unmapped mapping lets go of its device in the background.
		for deadline := time.Now().Add(time.Minute); dev.Info().OpenCount > 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s still open a minute after its client unmapped it", name)
			}
		}
		if err := r.m.Remove(name, dm.RemoveOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := session.DeviceStates(r.srv); n != 1 {
		t.Errorf("the server keeps state for %d devices after %d were mapped or recalled and removed, want 1 (keep, still mapped)", n, devices)
	}
	// keep's state is whole: a recall still reaches its mapping.
	release, err := r.srv.Recall(keep, time.Minute, "test")
	if err != nil {
		t.Fatal(err)
	}
	release()
	if got := c.Do("recalled"); got != "true" {
		t.Errorf("keep's client after a recall: %q, want the mapping recalled", got)
	}
}
