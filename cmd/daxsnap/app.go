package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/errcode"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

// app is one invocation: its streams, global flags and client.
type app struct {
	in       io.Reader
	out, err io.Writer
	socket   string // --socket
	state    string // --state
	runtime  string // --runtime-dir
	// jsonErrors is --json on a verb that has no --json of its own; fail
	// reads it from the arguments (jsonWanted), as it must for errors
	// that come before flags are parsed.
	jsonErrors bool
	client     *apiclient.Client
}

// run executes args and returns the exit status: 0 ok, 1 error (one
// line on stderr saying what failed and what to do; with --json, that
// line is {"error": MESSAGE, "code": CODE}).
func run(args []string, in io.Reader, out, errOut io.Writer) int {
	a := &app{in: in, out: out, err: errOut}
	root := a.root()
	// On error majorMinorArgs returns nil: fail reads --json from args.
	rewritten, err := majorMinorArgs(args)
	if err != nil {
		return a.fail(nil, args, err)
	}
	args = rewritten
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	cmd, err := root.ExecuteC()
	if a.client != nil {
		a.client.Close()
	}
	if err == nil {
		return 0
	}
	return a.fail(cmd, args, err)
}

// fail prints err as run's one line and returns 1. Where dmsetup would
// print the kernel's errno text ("device-mapper: remove ioctl on vol
// failed: Device or resource busy"), the line begins with it, so that
// scripts that look for it find it; daxsnap's explanation follows.
func (a *app) fail(cmd *cobra.Command, args []string, err error) int {
	errOut := a.err
	msg := describeError(cmd, err)
	if cmd != nil {
		if prefix := kernelPrefix(cmd, cmd.Flags().Args(), err); prefix != "" {
			msg = prefix + " " + msg
		}
	}
	if jsonWanted(args) {
		line, _ := json.Marshal(cliError{Error: msg, Code: errorCode(err)})
		fmt.Fprintf(errOut, "%s\n", line)
	} else {
		fmt.Fprintln(errOut, "daxsnap: "+msg)
	}
	return 1
}

// cliError is an error as --json prints it.
type cliError struct {
	Error string `json:"error"`
	// Code is the daemon's (internal/wire's codes: "not_found", "busy",
	// ...), or "unreachable" (no daemon answers), "invalid_argument" (the
	// command line is wrong), "failed" (the CLI's own work failed).
	Code string `json:"code"`
}

// Codes of errors that come from the CLI, not from the daemon.
const (
	codeUnreachable = "unreachable"
	codeFailed      = "failed"
)

// usageError is a command line that is wrong (arguments, flags, verb).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func errorCode(err error) string {
	var apiErr *api.Error
	var usage usageError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Code
	case errors.Is(err, apiclient.ErrUnreachable):
		return codeUnreachable
	case errors.As(err, &usage):
		return wire.CodeInvalidArgument
	}
	if code := errcode.Of(err); code != wire.CodeInternal {
		return code
	}
	return codeFailed
}

// jsonWanted reports whether the command line asks for JSON.
func jsonWanted(args []string) bool {
	for _, arg := range args {
		if arg == "--" {
			break
		}
		if arg == "--json" || arg == "--json=true" {
			return true
		}
	}
	return false
}

// describeError is err as one line. Cobra's unknown-command error spans
// lines ("...\n\nDid you mean this?\n\tdemo\n"): it becomes one sentence.
func describeError(cmd *cobra.Command, err error) string {
	msg := err.Error()
	if first, rest, _ := strings.Cut(msg, "\n"); cmd != nil && strings.HasPrefix(first, "unknown command ") {
		var suggestions []string
		for _, l := range strings.Split(rest, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasSuffix(l, "?") {
				suggestions = append(suggestions, l)
			}
		}
		msg = first
		if len(suggestions) > 0 {
			msg += " (did you mean " + strings.Join(suggestions, " or ") + "?)"
		}
		msg += ": see `" + cmd.CommandPath() + " --help`"
	}
	return oneLine(msg)
}

// oneLine folds a multi-line message (joined errors) onto one line.
func oneLine(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "daxsnap",
		Short: "A user-space device mapper whose snapshots keep DAX volumes DAX-capable",
		Long: "daxsnap runs a daemon (`daxsnap serve`) that owns memory regions and mapped devices,\nand a dmsetup-like client to drive it. Try `daxsnap demo`.\n\n" +
			"A verb that fails exits 1 with one line on stderr saying what failed and what to do;\n" +
			"with --json that line is {\"error\": MESSAGE, \"code\": CODE}, CODE being the daemon's\n" +
			"(not_found, busy, exists, invalid_table, ...) or unreachable, invalid_argument, failed.",
		SilenceUsage:      true,
		SilenceErrors:     true,
		Version:           version,
		PersistentPreRunE: a.resolveDeviceArg,
	}
	root.PersistentFlags().StringVar(&a.state, "state", "", "state directory (default $"+daemon.StateEnv+"; else "+rootStateDir+" for root, ./daxsnap-state for other users)")
	root.PersistentFlags().StringVar(&a.runtime, "runtime-dir", "", "directory of the sockets (default "+rootRuntimeDir+" for root without --state or $"+daemon.StateEnv+"; else STATE)")
	root.PersistentFlags().StringVar(&a.socket, "socket", "", "control socket (default RUNTIME-DIR/"+daemon.SocketName+")")
	// Every verb takes --json, so that a script gets any verb's error as
	// {"error", "code"}, and --json before the verb is not taken for a
	// flag with a value. A verb that prints has its own --json, which
	// shadows this one and prints its output as JSON too.
	root.PersistentFlags().BoolVar(&a.jsonErrors, "json", false, "print an error as one JSON line {\"error\": MESSAGE, \"code\": CODE}")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%s: %w: see `%s --help`", c.CommandPath(), err, c.CommandPath())}
	})
	root.AddCommand(a.serveCmd(), a.pmemCmd(), a.demoCmd(), a.versionCmd(), a.targetsCmd(), a.snapshotCmd(), a.cowCmd(), a.checkpointCmd(), a.sessionsCmd(), a.genManCmd())
	root.AddCommand(a.sendCmd(), a.receiveCmd())
	root.AddCommand(a.backupCmd(), a.restoreCmd())
	root.AddCommand(a.deviceCmds()...)
	root.AddCommand(a.showCmds()...)
	root.AddCommand(a.dmsetupCmds()...)
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
func (a *app) api() *apiclient.Client {
	if a.client == nil {
		sock := a.socket
		if sock == "" {
			sock = daemon.SocketPathIn(a.runtimeDir())
		}
		a.client = apiclient.New(sock)
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
			return usageError{fmt.Errorf("%s: %d argument(s) given: usage: %s", cmd.CommandPath(), len(args), cmd.UseLine())}
		}
		return nil
	}
}
