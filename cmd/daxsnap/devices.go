package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

func (a *app) deviceCmds() []*cobra.Command {
	return []*cobra.Command{a.createCmd(), a.loadCmd(), a.suspendCmd(), a.resumeCmd(),
		a.nameCmd("clear", "Drop the inactive table", func(ctx context.Context, n string) error { return a.api().Clear(ctx, n) }),
		a.nameCmd("wipe_table", "Replace the live table with `error` of the same size (all I/O fails)",
			func(ctx context.Context, n string) error { return a.api().WipeTable(ctx, n) }),
		a.removeCmd(), a.renameCmd(), a.messageCmd(), a.disconnectCmd()}
}

func (a *app) disconnectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "disconnect NAME",
		Short: "Close a device's NBD clients and revoke its open FUSE files (root), so that it can be removed",
		Long: `Close a device's NBD clients and revoke its open FUSE files (root), so that
it can be removed, merged or have its snapshots removed. Revoked FUSE files
fail every read and write with ENXIO until closed and opened again. DAX
mappings are not touched. ` + "`daxsnap info NAME`" + ` lists who holds a device.`,
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := a.api().Disconnect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "%s: closed %d NBD connection(s), revoked %d open FUSE file(s)\n", r.Name, r.NBD, r.FUSEFiles)
			return nil
		},
	}
}

// readTable takes the table from --table, a FILE argument or stdin, as
// dmsetup does.
func (a *app) readTable(verb, text string, fileArgs []string) (string, error) {
	switch {
	case text != "" && len(fileArgs) > 0:
		return "", fmt.Errorf("%s: give the table with --table or as FILE, not both", verb)
	case text != "":
		return text, nil
	case len(fileArgs) > 0:
		b, err := os.ReadFile(fileArgs[0])
		if err != nil {
			return "", fmt.Errorf("%s: read table: %w", verb, err)
		}
		return string(b), nil
	}
	b, err := io.ReadAll(a.in)
	if err != nil {
		return "", fmt.Errorf("%s: read table from stdin: %w", verb, err)
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", fmt.Errorf("%s: no table on stdin: give --table TEXT or a FILE (or --notable to create without one)", verb)
	}
	return string(b), nil
}

func (a *app) createCmd() *cobra.Command {
	var req wire.DeviceCreate
	var table string
	var uid, gid uint32
	cmd := &cobra.Command{
		Use:   "create NAME [--table TEXT | FILE] [-u UUID] [--readonly] [--notable] [-U UID] [-G GID] [-M MODE]",
		Short: "Create a device; with a table it is loaded and resumed (the table is read from stdin if not given)",
		Long: `Create a device; with a table it is loaded and resumed (the table is read from stdin if not given).

--uid, --gid and --mode give the device an owner and permission bits, as
dmsetup create does for its node: they decide which users may map it
through the DAX session socket (read needs r, a writable map r and w;
root may map anything). The defaults are dmsetup's: uid 0, gid 6 (disk),
mode 0600.`,
		Args: args(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			var err error
			if req.UID, req.GID, err = ownerFlags(cmd, "create "+req.Name, uid, gid, req.Mode); err != nil {
				return err
			}
			if !req.NoTable {
				if req.Table, err = a.readTable("create "+req.Name, table, args[1:]); err != nil {
					return err
				}
			}
			_, err = a.api().Create(cmd.Context(), req)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&table, "table", "", "table `TEXT`: lines of START LENGTH TARGET ARGS..., in 512-byte sectors")
	f.StringVarP(&req.UUID, "uuid", "u", "", "device uuid")
	f.BoolVarP(&req.ReadOnly, "readonly", "r", false, "create the device read-only")
	f.BoolVarP(&req.NoTable, "notable", "n", false, "create the device without a table")
	f.Uint32VarP(&uid, "uid", "U", 0, "owner `UID` of the device, for DAX map permission (default 0)")
	f.Uint32VarP(&gid, "gid", "G", 0, "group `GID` of the device (default 6, disk)")
	f.StringVarP(&req.Mode, "mode", "M", "", "permission bits of the device, octal `MODE` (default 0600)")
	return cmd
}

// ownerFlags reads --uid, --gid and --mode as a request carries them:
// nil (and "") for what was not given, which the daemon defaults.
func ownerFlags(cmd *cobra.Command, op string, uid, gid uint32, mode string) (*uint32, *uint32, error) {
	var u, g *uint32
	if cmd.Flags().Changed("uid") {
		u = &uid
	}
	if cmd.Flags().Changed("gid") {
		g = &gid
	}
	if cmd.Flags().Changed("mode") {
		// The daemon checks it too; "" would mean its default there.
		if _, err := access.ParseMode(mode); err != nil {
			return nil, nil, fmt.Errorf("%s: --mode: %w", op, err)
		}
	}
	return u, g, nil
}

func (a *app) loadCmd() *cobra.Command {
	var table string
	cmd := &cobra.Command{
		Use:     "load NAME [--table TEXT | FILE]",
		Aliases: []string{"reload"},
		Short:   "Load a table into the inactive slot; `resume` makes it live",
		Args:    args(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := a.readTable("load "+args[0], table, args[1:])
			if err != nil {
				return err
			}
			return a.api().Load(cmd.Context(), args[0], wire.Load{Table: text})
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "table text")
	return cmd
}

func (a *app) suspendCmd() *cobra.Command {
	var req wire.Suspend
	var noLockfs bool
	cmd := &cobra.Command{
		Use:   "suspend NAME [--noflush]",
		Short: "Flush, drain in-flight I/O and hold new I/O until resume",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.api().Suspend(cmd.Context(), args[0], req)
		},
	}
	cmd.Flags().BoolVar(&req.NoFlush, "noflush", false, "do not flush before suspending")
	cmd.Flags().BoolVar(&noLockfs, "nolockfs", false, "accepted for dmsetup compatibility (daxsnap freezes no file system)")
	return cmd
}

func (a *app) resumeCmd() *cobra.Command {
	var noFlush, noLockfs bool
	cmd := &cobra.Command{
		Use:   "resume NAME",
		Short: "Make the inactive table live, if any, and let I/O flow",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.api().Resume(cmd.Context(), args[0])
		},
	}
	cmd.Flags().BoolVar(&noFlush, "noflush", false, "accepted for dmsetup compatibility")
	cmd.Flags().BoolVar(&noLockfs, "nolockfs", false, "accepted for dmsetup compatibility")
	return cmd
}

// nameCmd is a verb that takes only a device name.
func (a *app) nameCmd(use, short string, fn func(context.Context, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Args:  args(1, 1),
		RunE:  func(cmd *cobra.Command, args []string) error { return fn(cmd.Context(), args[0]) },
	}
}

func (a *app) removeCmd() *cobra.Command {
	var req wire.Remove
	cmd := &cobra.Command{
		Use:   "remove NAME [--force] [--deferred]",
		Short: "Remove a device (an open one: --deferred removes it on last close, --force makes its I/O fail)",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.api().Remove(cmd.Context(), args[0], req)
		},
	}
	cmd.Flags().BoolVarP(&req.Force, "force", "f", false, "first replace the table of an open device with the error target (all its I/O fails)")
	cmd.Flags().BoolVar(&req.Deferred, "deferred", false, "remove an open device when its last user closes it")
	return cmd
}

func (a *app) renameCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rename NAME NEW_NAME",
		Short: "Rename a device",
		Args:  args(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.api().Rename(cmd.Context(), args[0], wire.Rename{NewName: args[1]})
			return err
		},
	}
}

func (a *app) messageCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "message NAME SECTOR TEXT...",
		Short: "Send a message to the target covering SECTOR",
		Args:  args(3, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sector, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil {
				return fmt.Errorf("message %s: sector %q: give a sector number (512-byte units)", args[0], args[1])
			}
			reply, err := a.api().Message(cmd.Context(), args[0], wire.Message{Sector: sector, Args: args[2:]})
			if err != nil {
				return err
			}
			if reply.Reply != "" {
				fmt.Fprintln(a.out, strings.TrimRight(reply.Reply, "\n"))
			}
			return nil
		},
	}
}
