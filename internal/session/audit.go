package session

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Problem is a mapping the audit found without the protection it needs.
type Problem struct {
	PID    int    `json:"pid"`
	ID     uint64 `json:"id"`
	Device string `json:"device"`
	Reason string `json:"reason"`
}

// Audit checks in each session's /proc/PID/smaps that every page of every
// write-protected mapping lies in a VMA carrying the userfaultfd
// write-protect flag ("uw"): a mapping without it would let stores past
// copy-on-write. Sessions whose process is gone are skipped.
func (s *Server) Audit() []Problem {
	sessions := s.liveSessions()
	var out []Problem
	for _, x := range sessions {
		var ranges []auditRange
		x.mu.Lock()
		for _, m := range x.maps {
			if m.uffd != nil && !m.dropped.Load() {
				ranges = append(ranges, auditRange{id: m.id, device: m.dev.Name(), start: uint64(m.base()), end: uint64(m.base()) + uint64(m.n)})
			}
		}
		x.mu.Unlock()
		if len(ranges) == 0 {
			continue
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", x.pid))
		if err != nil {
			continue // the process is gone; its session ends on its socket
		}
		for _, r := range auditSmaps(f, ranges) {
			out = append(out, Problem{PID: x.pid, ID: r.id, Device: r.device, Reason: r.reason})
		}
		f.Close()
	}
	return out
}

type auditRange struct {
	id         uint64
	device     string
	start, end uint64
	reason     string
}

// auditSmaps returns the ranges not wholly covered by VMAs with "uw" in
// their VmFlags, each with the reason.
func auditSmaps(r io.Reader, ranges []auditRange) []auditRange {
	type vma struct {
		start, end uint64
		uw         bool
	}
	var vmas []vma
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if flags, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			if n := len(vmas); n > 0 {
				vmas[n-1].uw = hasWord(flags, "uw")
			}
			continue
		}
		// A VMA header: "start-end perms offset dev inode [path]".
		f := strings.Fields(line)
		if len(f) < 5 || strings.HasSuffix(f[0], ":") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		vmas = append(vmas, vma{start: s, end: e})
	}
	var bad []auditRange
	for _, rg := range ranges {
		covered := rg.start
		reason := ""
		for _, v := range vmas {
			if v.end <= rg.start || v.start >= rg.end {
				continue
			}
			if v.start > covered {
				reason = fmt.Sprintf("[%#x, %#x) is not mapped", covered, v.start)
				break
			}
			if !v.uw {
				reason = fmt.Sprintf("VMA [%#x, %#x) lacks the userfaultfd write-protect flag (uw)", v.start, v.end)
				break
			}
			covered = v.end
		}
		if reason == "" && covered < rg.end {
			reason = fmt.Sprintf("[%#x, %#x) is not mapped", covered, rg.end)
		}
		if reason != "" {
			rg.reason = reason
			bad = append(bad, rg)
		}
	}
	return bad
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}
