package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/daxsnap/daxsnap/internal/sdnotify"
)

// exit is os.Exit; tests replace it.
var exit = os.Exit

// ServeUntilSignal starts a daemon and serves until SIGINT or SIGTERM,
// then stops cleanly: it serves the users of the devices until the last
// one lets go (drain). A second signal, or Config.ShutdownTimeout after
// the first, forces the stop, breaking the users left; a third exits at
// once.
func ServeUntilSignal(cfg Config) error {
	// Caught from before Start: once the sockets accept, a client (or a
	// test) may signal at once, and the default action would kill the
	// daemon without its shutdown.
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	d, err := Start(cfg)
	if err != nil {
		return err
	}
	// The sockets accept: a Type=notify unit counts as started now.
	notify(d.log, sdnotify.Ready+"\n"+sdnotify.Status(fmt.Sprintf("serving %d devices on %s", len(d.mgr.List()), d.SocketPath())))
	stop, stopNow := context.WithCancel(context.Background())
	defer stopNow()
	force, forceNow := context.WithCancel(context.Background())
	defer forceNow()
	go handleSignals(sigs, stopNow, forceNow, d.cfg.ShutdownTimeout, d.log)
	return d.Run(stop, force)
}

// handleSignals stops on the first signal, forces the stop on the second
// (or timeout after the first, if not 0) and exits on the third.
func handleSignals(sigs <-chan os.Signal, stop, force func(), timeout time.Duration, log *slog.Logger) {
	s, ok := <-sigs
	if !ok {
		return
	}
	log.Info("signal received: stopping cleanly once the devices' users let go (send it again to force the stop)",
		"signal", s.String(), "shutdown_timeout", timeout)
	notify(log, sdnotify.Stopping+"\n"+sdnotify.Status("stopping: waiting for the devices' users to let go"))
	stop()
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case s, ok = <-sigs:
		if !ok {
			return
		}
		log.Warn("second signal: forcing the stop (send it again to exit at once)", "signal", s.String())
	case <-expired:
		log.Warn("shutdown timeout: forcing the stop (send the signal again to exit at once)", "shutdown_timeout", timeout)
	}
	force()
	s, ok = <-sigs
	if !ok {
		return
	}
	log.Error("third signal: exiting without finishing the shutdown", "signal", s.String())
	exit(1)
}

// notify tells the service manager (systemd, Type=notify) state; outside
// one it does nothing. A failure is logged: the daemon serves anyway.
func notify(log *slog.Logger, state string) {
	if _, err := sdnotify.Notify(state); err != nil {
		log.Warn("cannot notify the service manager", "err", err)
	}
}
