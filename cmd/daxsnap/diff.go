package main

import (
	"fmt"

	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/spf13/cobra"
)

func (a *app) snapshotDiffCmd() *cobra.Command {
	var asJSON, full bool
	cmd := &cobra.Command{
		Use:   "diff OLDER [NEWER|ORIGIN] [--json] [--full]",
		Short: "List the extents that changed from snapshot OLDER to NEWER (or to the live origin)",
		Long: "List the byte extents that differ between snapshot OLDER and NEWER, a newer\n" +
			"snapshot of the same origin, or the live origin (no second name, or its name),\n" +
			"at the snapshots' chunk granularity. They come from the exception stores, which\n" +
			"record every changed chunk durably, so they survive restarts and kill -9.\n" +
			"A pair daxsnap cannot answer exactly (NEWER taken before tracking, a snapshot\n" +
			"written to directly, invalid or merging) is refused with the reason; --full\n" +
			"then answers the whole device instead where the changes are merely unknown.\n" +
			"Lines are OFFSET LENGTH in bytes; --json prints the extents with the chunk size.",
		Args: args(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := wire.SnapshotDiffRequest{From: args[0], Full: full}
			if len(args) == 2 {
				req.To = args[1]
			}
			d, err := a.api().SnapshotDiff(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(d)
			}
			if d.Full {
				fmt.Fprintf(a.err, "whole device: %s\n", d.Why)
			}
			for _, e := range d.Extents {
				fmt.Fprintf(a.out, "%d %d\n", e.Off, e.Len)
			}
			fmt.Fprintf(a.err, "%s to %s: %d extents, %s of %s changed (chunk %s)\n",
				d.From, d.To, len(d.Extents), formatSize(d.Changed), formatSize(d.Size), formatSize(d.ChunkSize))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (wire.SnapshotDiff)")
	cmd.Flags().BoolVar(&full, "full", false, "when the changes are not known, answer the whole device instead of refusing")
	return cmd
}
