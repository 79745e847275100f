package daemon

import (
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"
)

// Ensure that the first signal asks for a clean shutdown and the second
// exits at once.
func TestHandleSignals(t *testing.T) {
	exited := make(chan int, 1)
	exit = func(code int) { exited <- code }
	defer func() { exit = os.Exit }()
	sigs := make(chan os.Signal, 2)
	cancelled := make(chan struct{})
	go handleSignals(sigs, func() { close(cancelled) }, slog.New(slog.DiscardHandler))

	sigs <- syscall.SIGTERM
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("first signal did not start the shutdown")
	}
	select {
	case code := <-exited:
		t.Fatalf("exited (%d) after one signal", code)
	case <-time.After(20 * time.Millisecond):
	}
	sigs <- syscall.SIGINT
	select {
	case code := <-exited:
		if code == 0 {
			t.Fatal("forced exit with status 0")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second signal did not force the exit")
	}
}
