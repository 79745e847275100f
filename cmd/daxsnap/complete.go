package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// What a positional argument names, for shell completion.
type nameKind int

const (
	noName       nameKind = iota
	deviceName            // a mapped device (snapshots included)
	snapshotName          // a snapshot
	regionName            // a memory region
	fileFirst             // a file
)

// completions says what each verb's positional arguments name; a verb
// whose first argument is a FILE (fileFirst) completes files there.
var completions = map[string][]nameKind{
	"info": {deviceName}, "table": {deviceName}, "status": {deviceName},
	"load": {deviceName}, "suspend": {deviceName}, "resume": {deviceName},
	"clear": {deviceName}, "wipe_table": {deviceName}, "remove": {deviceName},
	"rename": {deviceName}, "message": {deviceName}, "disconnect": {deviceName},
	"deps": {deviceName}, "mknodes": {deviceName}, "set": {deviceName},
	"snapshot create": {deviceName}, "snapshot list": {deviceName},
	"snapshot remove": {snapshotName}, "snapshot merge": {snapshotName}, "snapshot extend": {snapshotName}, "snapshot diff": {snapshotName, deviceName},
	"cow adopt":   {fileFirst, deviceName},
	"pmem remove": {regionName},
}

// setCompletions gives every verb of root in completions its
// ValidArgsFunction.
func (a *app) setCompletions(root *cobra.Command) {
	for path, kinds := range completions {
		cmd, _, err := root.Find(strings.Fields(path))
		if err != nil || cmd.CommandPath() != root.Name()+" "+path {
			panic("completions: no verb " + path)
		}
		cmd.ValidArgsFunction = a.completeNames(kinds...)
	}
}

// completeNames completes the positional arguments of a verb from the
// running daemon: kinds[i] is what argument i names. Without a daemon it
// offers nothing, and never file names where a name is wanted.
func (a *app) completeNames(kinds ...nameKind) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		kind := noName
		if len(args) < len(kinds) {
			kind = kinds[len(args)]
		}
		var names []string
		switch kind {
		case fileFirst:
			return nil, cobra.ShellCompDirectiveDefault
		case deviceName:
			devs, err := a.api().Devices(cmd.Context())
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, d := range devs {
				names = append(names, d.Name)
			}
		case snapshotName:
			snaps, err := a.api().Snapshots(cmd.Context(), "")
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, s := range snaps {
				names = append(names, s.Name)
			}
		case regionName:
			regions, err := a.api().PmemList(cmd.Context())
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, r := range regions {
				names = append(names, r.Name)
			}
		}
		var out []cobra.Completion
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
