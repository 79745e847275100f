package main

import (
	"encoding/json"

	"fmt"
	"io"
	"os"
	"strings"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/spf13/cobra"
)

// app is one invocation: its streams, global flags and client.
type app struct {
	in       io.Reader
	out, err io.Writer
	socket   string // --socket
	state    string // --state
	runtime  string // --runtime-dir
	client   *api.Client
}

// run executes args and returns the exit status: 0 ok, 1 error (one
// line on stderr saying what failed and what to do).
func run(args []string, in io.Reader, out, errOut io.Writer) int {
	a := &app{in: in, out: out, err: errOut}
	root := a.root()
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	err := root.Execute()
	if a.client != nil {
		a.client.Close()
	}
	if err != nil {
		fmt.Fprintln(errOut, "daxsnap: "+oneLine(err.Error()))
		return 1
	}
	return 0
}

// oneLine folds a multi-line message (joined errors) onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "daxsnap",
		Short:         "A user-space device mapper whose snapshots keep DAX volumes DAX-capable",
		Long:          "daxsnap runs a daemon (`daxsnap serve`) that owns memory regions and mapped devices,\nand a dmsetup-like client to drive it. Try `daxsnap demo`.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.PersistentFlags().StringVar(&a.state, "state", "", "state directory (default $"+daemon.StateEnv+"; else "+rootStateDir+" for root, ./daxsnap-state for other users)")
	root.PersistentFlags().StringVar(&a.runtime, "runtime-dir", "", "directory of the sockets (default "+rootRuntimeDir+" for root without --state or $"+daemon.StateEnv+"; else STATE)")
	root.PersistentFlags().StringVar(&a.socket, "socket", "", "control socket (default RUNTIME-DIR/"+daemon.SocketName+")")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w: see `%s --help`", c.CommandPath(), err, c.CommandPath())
	})
	root.AddCommand(a.serveCmd(), a.pmemCmd(), a.demoCmd(), a.versionCmd(), a.targetsCmd(), a.snapshotCmd(), a.cowCmd(), a.sessionsCmd(), a.genManCmd())
	root.AddCommand(a.deviceCmds()...)
	root.AddCommand(a.showCmds()...)
	a.setCompletions(root)
	return root
}

// Where root's daemon keeps its state and sockets when not told, as the
// systemd unit (StateDirectory=daxsnap, RuntimeDirectory=daxsnap) does.
const (
	rootStateDir   = "/var/lib/daxsnap"
	rootRuntimeDir = "/run/daxsnap"
)

// euid is os.Geteuid; tests replace it.
var euid = os.Geteuid

// stateDir is --state, $DAXSNAP_STATE, /var/lib/daxsnap for root, or
// ./daxsnap-state.
func (a *app) stateDir() string {
	if a.state != "" {
		return a.state
	}
	if os.Getenv(daemon.StateEnv) == "" && euid() == 0 {
		return rootStateDir
	}
	return daemon.DefaultStateDir()
}

// runtimeDir is where the sockets are: --runtime-dir, /run/daxsnap for
// root when the state directory is root's default, or the state directory.
func (a *app) runtimeDir() string {
	if a.runtime != "" {
		return a.runtime
	}
	if a.state == "" && os.Getenv(daemon.StateEnv) == "" && euid() == 0 {
		return rootRuntimeDir
	}
	return a.stateDir()
}

// api returns the client for the daemon.
func (a *app) api() *api.Client {
	if a.client == nil {
		sock := a.socket
		if sock == "" {
			sock = daemon.SocketPathIn(a.runtimeDir())
		}
		a.client = api.NewClient(sock)
	}
	return a.client
}

// printJSON writes v indented.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// args checks the argument count and says how to call cmd otherwise.
func args(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			return fmt.Errorf("%s: %d argument(s) given: usage: %s", cmd.CommandPath(), len(args), cmd.UseLine())
		}
		return nil
	}
}
