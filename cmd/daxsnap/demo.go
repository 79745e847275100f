package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

// Demo sizes: a 64 MiB region, a 1 MiB pattern written 8 MiB in.
const (
	demoRegion  = 64 << 20
	demoPattern = 1 << 20
	demoOffset  = 8 << 20
	demoDevice  = "demo-vol"
)

func (a *app) demoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Show daxsnap working, with nothing prepared: daemon, pmem region, volume, NBD I/O",
		Long: "Start an embedded daemon in a temporary state directory, create a 64 MiB memory region\n" +
			"and a linear volume on it, write a pattern through NBD and read it back, print the\n" +
			"dmsetup-style table, status and info, then clean everything up.",
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.demo(cmd.Context()) },
	}
}

// demoEnv is what the demo sets up and tears down.
type demoEnv struct {
	state, shm string
	d          *daemon.Daemon
	c          *apiclient.Client
}

func (a *app) demo(ctx context.Context) (err error) {
	env, err := startDemo(a)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() { err = errors.Join(err, env.close()) }()
	a.step("started an embedded daxsnap daemon\n    state: %s\n    control socket: %s (try: curl --unix-socket %s http://x/v1/devices)",
		env.state, env.d.SocketPath(), env.d.SocketPath())
	path, err := a.demoVolume(ctx, env)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := a.demoIO(ctx, env, path); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := waitClosed(ctx, env.c, demoDevice); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	a.demoShow(ctx, env)
	if err := a.demoCleanup(ctx, env); err != nil {
		return fmt.Errorf("demo: clean up: %w", err)
	}
	a.demoNext()
	return nil
}

func startDemo(a *app) (*demoEnv, error) {
	env := &demoEnv{}
	var err error
	if env.state, err = os.MkdirTemp("", "daxsnap-demo-"); err != nil {
		return nil, fmt.Errorf("make a temporary state directory: %w", err)
	}
	if env.shm, err = os.MkdirTemp(daemon.DefaultPmemDir, "daxsnap-demo-"); err != nil {
		os.RemoveAll(env.state)
		return nil, fmt.Errorf("make a directory on %s (tmpfs) for the memory region: %w: daxsnap needs /dev/shm", daemon.DefaultPmemDir, err)
	}
	log := slog.New(slog.NewTextHandler(a.err, &slog.HandlerOptions{Level: slog.LevelWarn}))
	env.d, err = daemon.Start(daemon.Config{StateDir: env.state, PmemDir: env.shm, Version: version, Logger: log})
	if err != nil {
		os.RemoveAll(env.state)
		os.RemoveAll(env.shm)
		return nil, err
	}
	env.c = apiclient.New(env.d.SocketPath())
	return env, nil
}

// close stops the daemon and removes every temporary file.
func (env *demoEnv) close() error {
	env.c.Close()
	err := env.d.Shutdown(context.Background())
	return errors.Join(err, os.RemoveAll(env.state), os.RemoveAll(env.shm))
}

func (a *app) step(format string, args ...any) {
	fmt.Fprintf(a.out, "==> "+format+"\n", args...)
}

// demoVolume creates the region and the volume; it returns the region path.
func (a *app) demoVolume(ctx context.Context, env *demoEnv) (string, error) {
	p, err := env.c.PmemCreate(ctx, wire.PmemCreate{Name: "demo", Size: demoRegion})
	if err != nil {
		return "", err
	}
	a.step("created pmem region %q: %s reserved on %s at %s\n    $ daxsnap pmem create demo --size %s",
		p.Name, formatSize(p.Size), p.Filesystem, p.Path, formatSize(p.Size))
	table := fmt.Sprintf("0 %d linear %s 0", p.Size/512, p.Path)
	if _, err := env.c.Create(ctx, wire.DeviceCreate{Name: demoDevice, Table: table}); err != nil {
		return "", err
	}
	a.step("created device %s mapping the whole region\n    $ daxsnap create %s --table %q", demoDevice, demoDevice, table)
	return p.Path, nil
}

// demoIO writes a pattern over NBD, reads it back, and checks that the
// bytes landed in the region file where the table says.
func (a *app) demoIO(ctx context.Context, env *demoEnv, regionPath string) error {
	sock := filepath.Join(env.state, daemon.NBDSocketName)
	nbd, err := nbdclient.Dial("unix", sock, demoDevice)
	if err != nil {
		return err
	}
	defer nbd.Close()
	a.step("connected over NBD to %s, export %q: %d bytes", sock, demoDevice, nbd.Size())
	pattern := demoBytes()
	if err := nbd.WriteAt(pattern, demoOffset); err != nil {
		return fmt.Errorf("nbd write: %w", err)
	}
	if err := nbd.Flush(); err != nil {
		return fmt.Errorf("nbd flush: %w", err)
	}
	back := make([]byte, len(pattern))
	if err := nbd.ReadAt(back, demoOffset); err != nil {
		return fmt.Errorf("nbd read: %w", err)
	}
	if !bytes.Equal(back, pattern) {
		return errors.New("the pattern read back over NBD differs from what was written: this is a daxsnap bug, please report it")
	}
	a.step("wrote a %s pattern at offset %s over NBD, flushed, read it back: identical", formatSize(demoPattern), formatSize(demoOffset))
	if err := checkRegionBytes(regionPath, pattern); err != nil {
		return err
	}
	a.step("the same bytes are in %s at offset %s: the linear table maps the volume straight onto memory", regionPath, formatSize(demoOffset))
	in, err := env.c.Info(ctx, demoDevice)
	if err == nil {
		a.step("while the NBD client is connected, the device's open count is %d", in.OpenCount)
	}
	return err
}

func demoBytes() []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < demoPattern; i++ {
		fmt.Fprintf(&b, "daxsnap demo block %08d\n", i)
	}
	return b.Bytes()[:demoPattern]
}

func checkRegionBytes(path string, want []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, demoOffset); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s does not hold the pattern at offset %d: this is a daxsnap bug, please report it", path, demoOffset)
	}
	return nil
}

// demoShow prints the device the way the CLI does.
func (a *app) demoShow(ctx context.Context, env *demoEnv) {
	if t, err := env.c.Table(ctx, demoDevice, false); err == nil {
		fmt.Fprintf(a.out, "\n$ daxsnap table %s\n", demoDevice)
		formatText(a.out, t, asIs)
	}
	if t, err := env.c.Status(ctx, demoDevice, false); err == nil {
		fmt.Fprintf(a.out, "\n$ daxsnap status %s\n", demoDevice)
		formatText(a.out, t, asIs)
	}
	if in, err := env.c.Info(ctx, demoDevice); err == nil {
		fmt.Fprintf(a.out, "\n$ daxsnap info %s\n", demoDevice)
		formatInfo(a.out, in)
	}
}

func (a *app) demoCleanup(ctx context.Context, env *demoEnv) error {
	if err := env.c.Remove(ctx, demoDevice, wire.Remove{}); err != nil {
		return err
	}
	if err := env.c.PmemRemove(ctx, "demo"); err != nil {
		return err
	}
	a.step("removed %s and the region, stopped the daemon, deleted its temporary files", demoDevice)
	return nil
}

// waitClosed waits for the NBD server to release the device after the
// client disconnected (the server notices the disconnect on its own time).
func waitClosed(ctx context.Context, c *apiclient.Client, name string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		in, err := c.Info(ctx, name)
		if err != nil || in.OpenCount == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still open %d time(s) 10s after the NBD client left", name, in.OpenCount)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (a *app) demoNext() {
	fmt.Fprint(a.out, `
Where to look next:
  daxsnap serve                                  # the daemon: as root, state in /var/lib/daxsnap and sockets
                                                 # in /run/daxsnap (as daxsnap.service); else both in ./daxsnap-state
  daxsnap pmem create fast --size 1G             # a memory region (prints its path)
  daxsnap create vol --table "0 2097152 linear /dev/shm/daxsnap/fast 0"
  daxsnap info vol; daxsnap table vol; daxsnap status vol
  qemu-img info "nbd+unix:///vol?socket=/run/daxsnap/nbd.sock"   # any NBD client; as a user: ./daxsnap-state/nbd.sock
  curl --unix-socket /run/daxsnap/daxsnap.sock http://x/metrics  # as a user: ./daxsnap-state/daxsnap.sock
  daxsnap --help                                 # every verb; man daxsnap once installed; docs/ in the source
`)
}
