package access

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Groups reads the supplementary groups of process pid from
// /proc/PID/status ("Groups:"). The pid comes from SO_PEERCRED, taken at
// connect time; the process may have exited and its pid been reused
// since, so the status must also show uid as its effective uid, or
// Groups fails (the caller then knows only the primary gid).
func Groups(pid int, uid uint32) ([]uint32, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("no pid (%d) to read the groups of", pid)
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	groups, err := parseStatus(bufio.NewScanner(f), uid)
	if err != nil {
		return nil, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return groups, nil
}

// parseStatus reads the "Uid:" and "Groups:" lines of a /proc/PID/status.
func parseStatus(sc *bufio.Scanner, uid uint32) ([]uint32, error) {
	var groups []uint32
	var sawUID, sawGroups bool
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		switch key {
		case "Uid": // real, effective, saved, filesystem
			if len(fields) < 2 {
				return nil, fmt.Errorf("Uid line %q has no effective uid", sc.Text())
			}
			if euid, err := strconv.ParseUint(fields[1], 10, 32); err != nil || uint32(euid) != uid {
				return nil, fmt.Errorf("effective uid %s, not the peer's %d: the process is gone and its pid reused?", fields[1], uid)
			}
			sawUID = true
		case "Groups":
			groups = make([]uint32, 0, len(fields))
			for _, f := range fields {
				g, err := strconv.ParseUint(f, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("Groups line %q: %q is not a gid", sc.Text(), f)
				}
				groups = append(groups, uint32(g))
			}
			sawGroups = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !sawUID || !sawGroups {
		return nil, fmt.Errorf("no Uid and Groups lines")
	}
	return groups, nil
}
