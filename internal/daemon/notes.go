package daemon

import (
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// note is what the daemon has to say about a device beyond dm's state
// (kept in its devState).
type note struct {
	// degraded explains why the device serves an `error` table instead
	// of its recorded one; keptLive is that recorded table, kept in the
	// state file and retried at the next start.
	degraded, keptLive string
	// interrupted says which operation the daemon stopped in the middle of.
	interrupted string
	// record says what was wrong with the device's state record.
	record string
	// mergeDeferred: a merge of this snapshot waits for the last user to
	// close (snapshot merge --deferred; recorded in the state file).
	mergeDeferred bool
}

func (n note) String() string {
	s := strings.TrimSpace(strings.TrimSpace(n.degraded+" "+n.interrupted) + " " + n.record)
	if n.mergeDeferred {
		s += " " + mergeDeferredNote
	}
	return strings.TrimSpace(s)
}

const mergeDeferredNote = "A merge into its origin waits for the last user of the origin (and of the snapshot) to close (snapshot merge --deferred); a `daxsnap snapshot merge` of it without --deferred names them."

// replaceFields replaces every target argument of table text found in
// with, reading the table with dm's table grammar: a line that changes is
// printed again, the others stay as they were, and text that is not a
// table is left alone.
func replaceFields(text string, with map[string]string) string {
	table, err := dm.ParseTable(text)
	if err != nil {
		return text
	}
	lines := strings.Split(text, "\n")
	for _, l := range table {
		changed := false
		for j, arg := range l.Args {
			if to, ok := with[arg]; ok {
				l.Args[j], changed = to, true
			}
		}
		if changed {
			lines[l.Line-1] = l.String()
		}
	}
	return strings.Join(lines, "\n")
}
