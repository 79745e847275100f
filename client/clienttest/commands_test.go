package clienttest

import (
	"strings"
	"testing"
)

// Ensure that a command line the table cannot run is answered with an
// error that says why, not a crash of the child: an unknown name, the
// wrong number of arguments, and a command that needs a mapping before
// any map.
func TestDo_refusesWhatItCannotRun(t *testing.T) {
	ch := &child{}
	for _, tc := range []struct {
		line, want string
	}{
		{"frob", "unknown command frob"},
		{"map vol 0", "map takes 4 arguments, got 2: usage: map DEVICE OFF LEN rw|ro"},
		{"peek", "peek takes 1 arguments, got 0"},
		{"peek 0", "peek: nothing is mapped: map a range first"},
		{"stop", "stop: nothing runs"},
		{"halt", "halt: no loop running"},
	} {
		f := strings.Fields(tc.line)
		ans, err := ch.do(f[0], f[1:])
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: answer %q, error %v; want an error containing %q", tc.line, ans, err, tc.want)
		}
	}
}

// Ensure that every command's usage starts with its name, so that the
// argument count do checks is the one the usage shows.
func TestCommands_usageNamesTheCommand(t *testing.T) {
	for name, cmd := range commands {
		if f := strings.Fields(cmd.usage); len(f) == 0 || f[0] != name || cmd.doc == "" || cmd.run == nil {
			t.Errorf("command %q: usage %q, doc %q: want the usage to start with the name, a doc and a run", name, cmd.usage, cmd.doc)
		}
	}
}
