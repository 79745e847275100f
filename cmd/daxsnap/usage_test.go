package main

import (
	"io"
	"strings"
	"testing"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Ensure that no flag's help names a value wrongly: pflag takes the first
// `quoted` word of a usage string as the value's name ("-f, --force
// error" came from "... with `error` first"), so every such name must be
// a placeholder in capitals, or the flag's type.
func TestCLI_flagUsage(t *testing.T) {
	root := (&app{in: strings.NewReader(""), out: io.Discard, err: io.Discard}).root()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			name, _ := pflag.UnquoteUsage(f)
			if strings.Contains(f.Usage, "`") && strings.IndexFunc(name, unicode.IsLower) >= 0 {
				t.Errorf("%s --%s: help shows the value as %q (from %q): quote only a placeholder in capitals", c.CommandPath(), f.Name, name, f.Usage)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
