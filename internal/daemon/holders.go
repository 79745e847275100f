package daemon

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/daxsnap/daxsnap/internal/dm"
)

// holds records who holds each device open through the daemon's own
// doors (NBD, FUSE, the API's data route), for messages that must say
// who: dm keeps only the count. Tables holding a device are found from
// the tables (users) and DAX mappings from the sessions.
type holds struct {
	mu sync.Mutex
	m  map[*dm.Device]map[string]int
}

// add records one hold of dev by who; drop (once) ends it.
func (h *holds) add(dev *dm.Device, who string) (drop func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = make(map[*dm.Device]map[string]int)
	}
	if h.m[dev] == nil {
		h.m[dev] = make(map[string]int)
	}
	h.m[dev][who]++
	return sync.OnceFunc(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.m[dev][who]--; h.m[dev][who] <= 0 {
			delete(h.m[dev], who)
		}
		if len(h.m[dev]) == 0 {
			delete(h.m, dev)
		}
	})
}

func (h *holds) of(dev *dm.Device) map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.m[dev]))
	for who, n := range h.m[dev] {
		out[who] = n
	}
	return out
}

// holders says who holds dev open: the tables that map it, DAX
// mappings, NBD clients, FUSE files, API I/O, and any opens it cannot
// name (counted from dm's open count).
func (d *Daemon) holders(dev *dm.Device) string {
	var parts []string
	named := 0
	if users := d.users(dev.Name()); len(users) > 0 {
		sort.Strings(users)
		parts = append(parts, fmt.Sprintf("the tables of %s (they map %s%s)", strings.Join(users, ", "), MapperPrefix, dev.Name()))
		named += len(users)
	}
	if d.sessions != nil {
		var pids []string
		for _, s := range d.sessions.Sessions() {
			n := 0
			for _, m := range s.Mappings {
				if m.Device == dev.Name() {
					n++
				}
			}
			if n > 0 {
				pids = append(pids, fmt.Sprintf("pid %d", s.PID))
				named += n
			}
		}
		if len(pids) > 0 {
			parts = append(parts, "DAX mappings of "+strings.Join(pids, ", "))
		}
	}
	held := d.holds.of(dev)
	whos := make([]string, 0, len(held))
	for who, n := range held {
		whos = append(whos, who)
		named += n
	}
	sort.Strings(whos)
	for _, who := range whos {
		if n := held[who]; n > 1 {
			parts = append(parts, fmt.Sprintf("%s (%d opens)", who, n))
		} else {
			parts = append(parts, who)
		}
	}
	if rest := dev.Info().OpenCount - named; rest > 0 {
		parts = append(parts, fmt.Sprintf("%d other open(s)", rest))
	}
	if len(parts) == 0 {
		return "nobody any more"
	}
	return strings.Join(parts, "; ")
}
