package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/snapshots"
	"github.com/spf13/cobra"
)

func (a *app) serveCmd() *cobra.Command {
	var nbdAddr, metricsAddr, tlsCreds, tlsAuthz, fuseDir, cowDir, logFormat, logLevel, restoreMode string
	var noNBDUnix, nbdInsecure, recoverState bool
	var autoThreshold, autoPercent int
	var shutdownTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: control socket RUNTIME-DIR/daxsnap.sock, NBD and FUSE exports, persistent devices",
		Long: "Run the daemon until SIGINT or SIGTERM. As root it keeps its state in " + rootStateDir + "\n" +
			"and its sockets (daxsnap.sock, nbd.sock, dax.sock) in " + rootRuntimeDir + ", as the systemd unit\n" +
			"daxsnap.service does; as another user both are in ./daxsnap-state. --state, $" + daemon.StateEnv + "\n" +
			"and --runtime-dir say otherwise. Under systemd (Type=notify) it reports READY=1 once\n" +
			"the sockets accept and STOPPING=1 when a stop begins.\n" +
			"A stop waits for the devices' users to let go:\n" +
			"nothing new opens, what is open is served, and the log says every few seconds who\n" +
			"still holds what (loop devices, NBD clients, DAX mappings). A second signal, or\n" +
			"--shutdown-timeout, forces the stop, and the log names every user it breaks.\n" +
			"Devices and memory regions persist in the state directory and come back on the next start.\n" +
			"Every device is a file in the FUSE mount (STATE/fuse unless --fuse says otherwise):\n" +
			"`losetup -f --show --direct-io=on STATE/fuse/NAME` makes it a block device for mkfs, mount\n" +
			"and fsck (--direct-io=on keeps the queue depth: without it the loop driver sends one request at a time).\n" +
			"The state file STATE/daxsnap.db is checked at start and backed up to STATE/daxsnap.db.bak\n" +
			"after every change; a damaged or lost one is refused, and --recover starts from the backup.",
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(a, logFormat, logLevel)
			if err != nil {
				return err
			}
			// Code that has no logger handed to it (the snapshot target,
			// the exception store) logs to the default: make it this one,
			// so that every line has the configured format and level.
			slog.SetDefault(log)
			startProfiling(log)
			if shutdownTimeout < 0 {
				return fmt.Errorf("serve: --shutdown-timeout %v: give a positive duration (0 waits for the users)", shutdownTimeout)
			}
			if cowDir != "" {
				if cowDir, err = filepath.Abs(cowDir); err != nil {
					return fmt.Errorf("serve: --cow-dir: %w", err)
				}
			}
			if restoreMode != "eager" && restoreMode != "lazy" {
				return fmt.Errorf("serve: --restore %q: give eager or lazy", restoreMode)
			}
			if !cmd.Flags().Changed("fuse") {
				fuseDir = filepath.Join(a.stateDir(), daemon.FUSEDirName)
			}
			return daemon.ServeUntilSignal(daemon.Config{StateDir: a.stateDir(), RuntimeDir: a.runtimeDir(), COWDir: cowDir, NBDAddr: nbdAddr, MetricsAddr: metricsAddr,
				NBDTLSCreds: tlsCreds, NBDTLSAuthz: tlsAuthz, NBDInsecure: nbdInsecure,
				NoNBDUnix: noNBDUnix, FUSEDir: fuseDir, Version: version, Logger: log, Recover: recoverState,
				Snapshots: snapshots.Config{AutoextendThreshold: autoThreshold, AutoextendPercent: autoPercent}, ShutdownTimeout: shutdownTimeout,
				LazyRestore: restoreMode == "lazy"})
		},
	}
	f := cmd.Flags()
	f.StringVar(&nbdAddr, "nbd-addr", "", `TCP address to export devices on over NBD, such as 127.0.0.1:10809 (default none); needs --tls-creds or --nbd-insecure`)
	f.StringVar(&metricsAddr, "metrics-addr", "", `TCP address to serve Prometheus metrics on at /metrics, such as 127.0.0.1:9595 (default none: /metrics only on the control socket); docs/metrics.md lists them`)
	f.StringVar(&tlsCreds, "tls-creds", "", "directory with ca-cert.pem, server-cert.pem and server-key.pem (as for qemu-nbd and nbdkit): NBD on TCP requires TLS and a client certificate the CA signed")
	f.StringVar(&tlsAuthz, "tls-authz", "", `file of "USER SUBJECT" lines mapping client certificate subjects (RFC 4514, "CN=alice,O=Example") to local users; without it a certificate's CN names the user`)
	f.BoolVar(&nbdInsecure, "nbd-insecure", false, "allow NBD on plain TCP, on a loopback address only: clients are anonymous and get only what each device's other permission bits allow")
	f.BoolVar(&noNBDUnix, "no-nbd-socket", false, "do not export on RUNTIME-DIR/"+daemon.NBDSocketName)
	f.StringVar(&fuseDir, "fuse", "", "mount point where every device is a file, for losetup (default STATE/"+daemon.FUSEDirName+`; "" for none)`)
	f.StringVar(&cowDir, "cow-dir", "", "directory for the COW files of snapshots taken without --cow, and their lost+found, for every origin (default: for an origin all on tmpfs/hugetlbfs, /dev/shm/daxsnap-cow-UID-HASH, this daemon's own; otherwise STATE/cow and STATE/lost+found); one daemon per directory; docs/decisions.md says why")
	f.StringVar(&restoreMode, "restore", "eager", "how a checkpointed volume whose memory is gone (after a reboot) comes back: eager restores it whole from its checkpoint before serving; lazy serves it at once and restores each part on first use, the rest in the background (docs/checkpoint.md)")
	f.BoolVar(&recoverState, "recover", false, "if STATE/daxsnap.db is damaged, missing or empty, start from its backup STATE/daxsnap.db.bak (the damaged file is kept aside)")
	f.IntVar(&autoThreshold, "autoextend-threshold", 100, "grow a snapshot's COW file when it is this percent full (50 to 99; 100 for never), unless the snapshot has its own (lvm.conf's snapshot_autoextend_threshold)")
	f.IntVar(&autoPercent, "autoextend-percent", 20, "grow it by this percent of its size (lvm.conf's snapshot_autoextend_percent)")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 0, "on a stop, force it after this long if users still hold devices (0: wait for them, or a second signal)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func newLogger(a *app, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("serve: --log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(a.err, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.err, opts)), nil
	}
	return nil, fmt.Errorf("serve: --log-format %q: use text or json", format)
}
