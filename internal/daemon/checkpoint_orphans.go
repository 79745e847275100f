package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/session"
)

// At a start with the memory intact, programs may still map a volume's
// memory with the mappings an earlier daemon gave them: their library
// hands them to this daemon (adoption) as soon as it answers. Until a
// mapping is adopted, its stores are outside every cut (the daemon cannot
// write-protect what it does not know), so a checkpoint taken then would
// not be a consistent cut. A checkpointed volume's engine therefore
// starts only once every process that maps its memory has had its
// mappings adopted, or has let go of them, or adoptWait has passed (then
// it starts with a warning naming them).

// adoptWait bounds the wait for the adoption of orphaned mappings.
const adoptWait = 30 * time.Second

// memoryFiles are the files dev's live table maps.
func memoryFiles(dev *dm.Device) []backing.ID {
	exts, err := dev.Extents(0, dev.Size())
	if err != nil {
		return nil
	}
	var ids []backing.ID
	for _, e := range exts {
		if s, ok := e.Source.(interface{ ID() backing.ID }); ok && !slices.Contains(ids, s.ID()) {
			ids = append(ids, s.ID())
		}
	}
	return ids
}

// mappersOf lists the processes, other than this one, that map any of
// files, from /proc/PID/maps.
func mappersOf(files []backing.ID) []int {
	if len(files) == 0 {
		return nil
	}
	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == self {
			continue
		}
		if session.MapsAny(pid, files) {
			out = append(out, pid)
		}
	}
	return out
}

// waitAdopted waits until every process that mapped dev's memory when
// it was called has its mappings of dev adopted by this daemon, or no
// longer maps it, or adoptWait has passed; it returns the pids still
// waited for then.
func (d *Daemon) waitAdopted(dev *dm.Device) []int {
	files := memoryFiles(dev)
	pids := mappersOf(files)
	deadline := time.Now().Add(adoptWait)
	for len(pids) > 0 {
		adopted := map[int]bool{}
		for _, s := range d.sessions.list() {
			for _, m := range s.Mappings {
				if m.Device == dev.Name() {
					adopted[s.PID] = true
				}
			}
		}
		pids = slices.DeleteFunc(pids, func(pid int) bool { return adopted[pid] || !session.MapsAny(pid, files) })
		if len(pids) == 0 || time.Now().After(deadline) || d.stopping.Load() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return pids
}
