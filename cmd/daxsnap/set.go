package main

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

// setCmd is `daxsnap set NAME --uid --gid --mode`: chown and chmod of a
// device without recreating it.
func (a *app) setCmd() *cobra.Command {
	var req wire.SetOwner
	var uid, gid uint32
	cmd := &cobra.Command{
		Use:   "set NAME [--uid UID] [--gid GID] [--mode MODE]",
		Short: "Change a device's owner, group or mode in place, as chown and chmod of its node",
		Long: `Change a device's owner, group or mode in place, as chown and chmod of a
dmsetup node would; what is not given stays. Like create, it needs root
(or the daemon's uid). The new owner decides the next DAX map, NBD and
FUSE open; what is open stays open, as with a file.`,
		Args: args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op := "set " + args[0]
			if !cmd.Flags().Changed("uid") && !cmd.Flags().Changed("gid") && !cmd.Flags().Changed("mode") {
				return usageError{fmt.Errorf("%s: nothing to change: give --uid, --gid or --mode", op)}
			}
			var err error
			if req.UID, req.GID, err = ownerFlags(cmd, op, uid, gid, req.Mode); err != nil {
				return err
			}
			in, err := a.api().SetOwner(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "%s: uid %d, gid %d, mode %s\n", in.Name, in.UID, in.GID, in.Mode)
			return nil
		},
	}
	f := cmd.Flags()
	f.Uint32VarP(&uid, "uid", "U", 0, "new owner `UID`")
	f.Uint32VarP(&gid, "gid", "G", 0, "new group `GID`")
	f.StringVarP(&req.Mode, "mode", "M", "", "new permission bits, octal `MODE`")
	return cmd
}
