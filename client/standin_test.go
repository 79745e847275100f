package client_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
)

// standIn starts the daemon's session server with no devices: every map
// is refused with the error refusal returns for the device's name, as the
// daemon would refuse it. stop ends the server and removes its socket.
func standIn(refusal func(device string) error) (socket string, stop func()) {
	dir, err := os.MkdirTemp("", "daxsnap-client-")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := session.Listen(session.Config{
		Socket:   filepath.Join(dir, "dax.sock"),
		Lookup:   func(name string) (*dm.Device, error) { return nil, refusal(name) },
		OnRemove: func(func(*dm.Device)) func() { return func() {} }, // no devices, no removals
	})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(); close(done) }()
	return srv.Socket(), func() {
		srv.Close()
		<-done
		os.RemoveAll(dir)
	}
}

// stoppingDaemon is a stand-in for a daemon that is stopping: it refuses
// every map as busy, with the daemon's words.
func stoppingDaemon() (socket string, stop func()) {
	return standIn(func(device string) error {
		return fmt.Errorf("map %s: %w: daxsnap is stopping: it serves what is open until the last user lets go", device, dm.ErrBusy)
	})
}
