package daemon

import (
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"
)

// Ensure that the first signal asks for a clean stop, the second forces
// it and the third exits at once.
func TestHandleSignals(t *testing.T) {
	exited := make(chan int, 1)
	exit = func(code int) { exited <- code }
	defer func() { exit = os.Exit }()
	sigs := make(chan os.Signal, 3)
	stopped, forced := make(chan struct{}), make(chan struct{})
	go handleSignals(sigs, func() { close(stopped) }, func() { close(forced) }, 0, slog.New(slog.DiscardHandler))

	sigs <- syscall.SIGTERM
	waitClosed(t, stopped, "first signal did not start the stop")
	select {
	case <-forced:
		t.Fatal("forced after one signal, with no shutdown timeout")
	case code := <-exited:
		t.Fatalf("exited (%d) after one signal", code)
	case <-time.After(20 * time.Millisecond):
	}
	sigs <- syscall.SIGINT
	waitClosed(t, forced, "second signal did not force the stop")
	select {
	case code := <-exited:
		t.Fatalf("exited (%d) after two signals: the forced stop must still run", code)
	case <-time.After(20 * time.Millisecond):
	}
	sigs <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code == 0 {
			t.Fatal("exit at once with status 0")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("third signal did not exit at once")
	}
}

// Ensure that --shutdown-timeout forces the stop once it expires after
// the first signal.
func TestHandleSignals_timeout(t *testing.T) {
	sigs := make(chan os.Signal, 3)
	defer close(sigs)
	stopped, forced := make(chan struct{}), make(chan struct{})
	go handleSignals(sigs, func() { close(stopped) }, func() { close(forced) }, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	sigs <- syscall.SIGTERM
	waitClosed(t, stopped, "the signal did not start the stop")
	waitClosed(t, forced, "the shutdown timeout did not force the stop")
}

func waitClosed(t *testing.T, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal(msg)
	}
}
