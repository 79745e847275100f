package daemon

import (
	"strings"
	"sync"
)

// note is what the daemon has to say about a device beyond dm's state.
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

// notes holds the notes by device name.
type notes struct {
	mu sync.Mutex
	m  map[string]note
}

func (n *notes) get(name string) note {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[name]
}

func (n *notes) update(name string, fn func(*note)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = make(map[string]note)
	}
	v := n.m[name]
	fn(&v)
	if v == (note{}) {
		delete(n.m, name)
		return
	}
	n.m[name] = v
}

func (n *notes) rename(old, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if v, ok := n.m[old]; ok {
		delete(n.m, old)
		n.m[name] = v
	}
}

func (n *notes) drop(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.m, name)
}

// renameRefs rewrites the kept tables that name a renamed device, as dm's
// tables, which hold the device itself, now print it.
func (n *notes) renameRefs(plan []rename) {
	paths := map[string]string{}
	for _, r := range plan {
		paths[MapperPrefix+r.from] = MapperPrefix + r.to
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, v := range n.m {
		if v.keptLive != "" {
			v.keptLive = replaceFields(v.keptLive, paths)
			n.m[name] = v
		}
	}
}

// keptNaming lists the devices whose kept table names device dev
// (/dev/mapper/DEV as a field): no table of dm holds it, but the kept
// table will at the next start.
func (n *notes) keptNaming(dev string) []string {
	paths := map[string]string{MapperPrefix + dev: ""}
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for name, v := range n.m {
		if v.keptLive != "" && replaceFields(v.keptLive, paths) != v.keptLive {
			out = append(out, name)
		}
	}
	return out
}

// replaceFields replaces every blank-separated field of text found in
// with, line by line.
func replaceFields(text string, with map[string]string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		changed := false
		for j, w := range f {
			if to, ok := with[w]; ok {
				f[j], changed = to, true
			}
		}
		if changed {
			lines[i] = strings.Join(f, " ")
		}
	}
	return strings.Join(lines, "\n")
}
