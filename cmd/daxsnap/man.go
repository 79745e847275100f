package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// genManCmd writes the man pages, generated from the commands' help:
// daxsnap.8 and one page per verb (daxsnap-snapshot-create.8, ...).
// `make install` runs it; it is hidden from help and completion.
func (a *app) genManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write the man pages (section 8) into DIR",
		Hidden: true,
		Args:   args(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fmt.Errorf("gen-man: %w", err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // no date: the same pages from the same source
			header := &doc.GenManHeader{Title: "DAXSNAP", Section: "8", Source: "daxsnap " + version, Manual: "System Administration"}
			if err := doc.GenManTree(root, header, args[0]); err != nil {
				return fmt.Errorf("gen-man %s: %w", args[0], err)
			}
			return nil
		},
	}
}
