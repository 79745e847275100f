package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

func (a *app) showCmds() []*cobra.Command {
	table := a.textCmd("table", "Print the live (or --inactive) table, dmsetup-style")
	table.AddCommand(a.checkCmd())
	return []*cobra.Command{a.infoCmd(), table,
		a.textCmd("status", "Print the live (or --inactive) table's status, dmsetup-style"),
		a.lsCmd()}
}

// devicesFor returns the named device, or every device.
func (a *app) devicesFor(ctx context.Context, args []string) ([]wire.Info, error) {
	if len(args) == 1 {
		in, err := a.api().Info(ctx, args[0])
		return []wire.Info{in}, err
	}
	return a.api().Devices(ctx)
}

func (a *app) infoCmd() *cobra.Command {
	var asJSON, columns bool
	var report reportOptions
	cmd := &cobra.Command{
		Use:   "info [NAME | MAJ:MIN | -j MAJ -m MIN] [-c [-o FIELDS] [--noheadings] [--separator SEP]]",
		Short: "Describe one device or all, as dmsetup info does",
		Long: `Describe one device or all, as dmsetup info does: the kernel's lines in
its order, then daxsnap's (capabilities, owner, holders, note).

-c prints one line per device in columns, as dmsetup info -c does; -o
picks them (default ` + defaultReportFields + `; also devno,
blkdevname, read_ahead, suspended, readonly, device_count), --noheadings
drops the heading line (and joins fields with ':'), --separator SEP joins
them with SEP.`,
		Args: args(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			devs, err := a.devicesFor(cmd.Context(), args)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(devs)
			}
			if columns || cmd.Flags().Changed("options") {
				return formatInfoColumns(a.out, devs, report)
			}
			if len(devs) == 0 {
				fmt.Fprint(a.out, noDevices)
			}
			for _, in := range devs {
				formatInfo(a.out, in)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&columns, "columns", "c", false, "one line per device, in columns")
	reportFlags(cmd, &report)
	return cmd
}

// textCmd is table or status: one device as it is, or every device with
// a "name: " prefix per line. Notes go to stderr, keeping stdout as
// dmsetup prints it.
func (a *app) textCmd(verb, short string) *cobra.Command {
	var inactive, asJSON, showKeys bool
	var target string
	cmd := &cobra.Command{
		Use:   verb + " [NAME] [--inactive] [--target TYPE]",
		Short: short,
		Args:  args(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			texts, err := a.texts(cmd.Context(), verb, args, inactive)
			if err != nil {
				return err
			}
			if target != "" {
				texts = onlyTarget(texts, target, len(args) == 0)
			}
			if asJSON {
				return a.printJSON(texts)
			}
			if len(texts) == 0 {
				fmt.Fprint(a.out, noDevices)
			}
			how := asIs
			if len(args) == 0 {
				how = namedEach
			}
			for _, t := range texts {
				formatText(a.out, t, how)
				if t.Note != "" {
					fmt.Fprintf(a.err, "daxsnap: note: %s: %s\n", t.Name, t.Note)
				}
				if t.Durability != nil {
					fmt.Fprintf(a.err, "daxsnap: durability: %s: %s\n", t.Name, t.Durability.Text)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&inactive, "inactive", false, "show the inactive table")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&target, "target", "", "only the lines of target `TYPE` (and, for every device, only the devices that have one)")
	if verb == "table" {
		cmd.Flags().BoolVar(&showKeys, "showkeys", false, "accepted for dmsetup compatibility: no daxsnap target has a key to hide")
	}
	return cmd
}

// onlyTarget keeps the lines of texts whose target is typ; listing every
// device, it drops the devices left with none, as dmsetup --target does.
func onlyTarget(texts []wire.Text, typ string, all bool) []wire.Text {
	out := []wire.Text{}
	for _, t := range texts {
		var keep []string
		for _, l := range strings.SplitAfter(t.Text, "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[2] == typ {
				keep = append(keep, l)
			}
		}
		if len(keep) == 0 && all {
			continue
		}
		t.Text = strings.Join(keep, "")
		out = append(out, t)
	}
	return out
}

func (a *app) texts(ctx context.Context, verb string, args []string, inactive bool) ([]wire.Text, error) {
	fetch := a.api().Table
	if verb == "status" {
		fetch = a.api().Status
	}
	var names []string
	if len(args) == 1 {
		names = args
	} else {
		devs, err := a.api().Devices(ctx)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			names = append(names, d.Name)
		}
	}
	texts := []wire.Text{}
	for _, n := range names {
		t, err := fetch(ctx, n, inactive)
		if err != nil {
			return nil, err
		}
		texts = append(texts, t)
	}
	return texts, nil
}

func (a *app) lsCmd() *cobra.Command {
	var asJSON, tree bool
	var target, style string
	cmd := &cobra.Command{
		Use:   "ls [--target TYPE] [--tree] [-o devname|blkdevname|devno]",
		Short: "List the devices with their numbers, as dmsetup ls does",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := parseDevNameStyle(style)
			if err != nil {
				return err
			}
			devs, err := a.api().Devices(cmd.Context())
			if err != nil {
				return err
			}
			how := lsPlain
			if target != "" {
				if devs, err = a.withTarget(cmd.Context(), devs, target); err != nil {
					return err
				}
				how = lsTarget
			}
			if asJSON {
				return a.printJSON(devs)
			}
			if s == styleBlkdevname {
				how = lsBlkdevname
			}
			if tree {
				formatTree(a.out, devs)
			} else {
				formatLs(a.out, devs, how)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&tree, "tree", false, "show the devices as a tree of what each uses")
	cmd.Flags().StringVar(&target, "target", "", "only the devices whose live table has a line of target `TYPE`")
	cmd.Flags().StringVarP(&style, "options", "o", "", "blkdevname: show dm-MINOR instead of the numbers")
	return cmd
}

// withTarget keeps the devices whose live table has a line of target typ.
func (a *app) withTarget(ctx context.Context, devs []wire.Info, typ string) ([]wire.Info, error) {
	out := []wire.Info{}
	for _, d := range devs {
		t, err := a.api().Table(ctx, d.Name, false)
		if err != nil {
			return nil, err
		}
		if len(onlyTarget([]wire.Text{t}, typ, true)) > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}

func (a *app) targetsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "targets",
		Short: "List the target types and their versions",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			targets, err := a.api().Targets(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(targets)
			}
			formatTargets(a.out, targets)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client's and the daemon's versions",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := a.api().Version(cmd.Context())
			if asJSON {
				if err != nil {
					return err
				}
				return a.printJSON(map[string]any{"client": version, "daemon": v})
			}
			if err != nil {
				formatVersion(a.out, version, nil)
				return err
			}
			formatVersion(a.out, version, &v)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) checkCmd() *cobra.Command {
	var readOnly, asJSON bool
	cmd := &cobra.Command{
		Use:   "check FILE",
		Short: "Build a table offline against the real devices; print what it maps or why it would not load",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("table check: %w", err)
			}
			rep, err := daemon.CheckTable(string(text), readOnly)
			if err != nil {
				return fmt.Errorf("table check %s: %w", args[0], err)
			}
			if asJSON {
				return a.printJSON(rep)
			}
			formatCheck(a.out, rep)
			return nil
		},
	}
	cmd.Flags().BoolVar(&readOnly, "readonly", false, "open the devices read-only, as a read-only device would")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) sessionsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List the processes that map devices directly, and audit their write protection",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			sessions, err := a.api().Sessions(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(sessions)
			}
			formatSessions(a.out, sessions)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
