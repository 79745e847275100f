package daemon

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// exit is os.Exit; tests replace it.
var exit = os.Exit

// ServeUntilSignal starts a daemon and serves until SIGINT or SIGTERM,
// then shuts down cleanly; a second signal exits at once.
func ServeUntilSignal(cfg Config) error {
	// Caught from before Start: once the sockets accept, a client (or a
	// test) may signal at once, and the default action would kill the
	// daemon without its shutdown.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	d, err := Start(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go handleSignals(sigs, cancel, d.log)
	return d.Run(ctx)
}

// handleSignals cancels on the first signal and exits on the second.
func handleSignals(sigs <-chan os.Signal, cancel func(), log *slog.Logger) {
	s, ok := <-sigs
	if !ok {
		return
	}
	log.Info("signal received: shutting down cleanly (send it again to exit at once)", "signal", s.String())
	cancel()
	s, ok = <-sigs
	if !ok {
		return
	}
	log.Error("second signal: exiting without finishing the shutdown", "signal", s.String())
	exit(1)
}
