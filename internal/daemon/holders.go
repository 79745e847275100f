package daemon

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/session"
)

// Who uses a device. A merge refuses to rewrite an origin under them, and
// a stopping daemon waits for them. The users are what can cache a
// device's data or lose its I/O: open FUSE files (a loop device, with the
// file system mounted on it), NBD clients, and DAX mappings. Tables over a
// device are not users themselves (their users are), and neither is one
// control API read or write, which holds a device for its duration only.

// devUser is one user of a device, for people.
type devUser struct {
	kind   string // dm.HolderFUSE, dm.HolderNBD or userDAX
	device string // the device it holds open
	who    string // what it is ("/dev/loop0 (mounted on /mnt) on FUSE file /s/fuse/vol")
	fix    string // how it lets go ("umount /mnt, then losetup -d /dev/loop0")
}

const userDAX = "dax"

func (u devUser) String() string { return u.who }

// devUsers are users as the snapshot manager takes them (snapshots.Users).
type devUsers []devUser

func (u devUsers) Len() int       { return len(u) }
func (u devUsers) String() string { return describeUsers(u) }

// describeUsers joins users for a message: who, and how each lets go.
func describeUsers(users []devUser) string {
	var who, fix []string
	for _, u := range users {
		who = append(who, u.who)
		if !slices.Contains(fix, u.fix) {
			fix = append(fix, u.fix)
		}
	}
	return strings.Join(who, "; ") + " (to let go: " + strings.Join(fix, "; ") + ")"
}

// holders finds who uses a device: its FUSE files, NBD clients and DAX
// mappings, and the tables of the devices stacked on it.
type holders struct {
	mgr      *dm.Manager
	devs     *devStates   // recorded tables kept in place of an error table
	sessions *daxSessions // the DAX mappings
}

// holdersOf lists the users of dev and of every device stacked on it,
// with the DAX mappings daxUsers selects (nil: none), as deviceUsers.
func (hs *holders) holdersOf(dev *dm.Device, daxUsers func(session.MappingInfo) bool) []devUser {
	over := hs.mgr.Over(dev)
	var out []devUser
	for _, other := range hs.mgr.List() {
		if other == dev || slices.Contains(over, other) {
			out = append(out, hs.deviceUsers(other, daxUsers)...)
		}
	}
	return out
}

// allUsers lists the users a stop waits for: those of every device, DAX
// mappings as daxMappingHoldsStop says.
func (hs *holders) allUsers() []devUser {
	var out []devUser
	for _, dev := range hs.mgr.List() {
		out = append(out, hs.deviceUsers(dev, daxMappingHoldsStop)...)
	}
	return out
}

// daxMappingHoldsStop says whether a stopping daemon waits for DAX
// mapping m to be unmapped, as for every other user. It does, unless the
// client keeps the mapping write-protected through the stop and hands it
// to the next daemon (OutlivesDaemon: the stop does not break it). This
// one function decides it.
func daxMappingHoldsStop(m session.MappingInfo) bool { return !m.OutlivesDaemon }

// deviceUsers lists dev's own users, and its DAX mappings dax accepts
// (none if dax is nil).
func (hs *holders) deviceUsers(dev *dm.Device, dax func(session.MappingInfo) bool) []devUser {
	var out []devUser
	var loops map[string][]string
	for _, h := range dev.Holders() {
		switch h.Kind {
		case dm.HolderFUSE:
			if loops == nil {
				loops = loopDevices()
			}
			out = append(out, fuseUsers(dev.Name(), h, loops[h.Who])...)
		case dm.HolderNBD:
			for range h.N {
				out = append(out, devUser{kind: dm.HolderNBD, device: dev.Name(), who: "NBD client " + h.Who + " of " + dev.Name(),
					fix: "end the NBD clients (nbd-client -d /dev/nbdN), or as root: daxsnap disconnect " + dev.Name()})
			}
		}
	}
	if dax != nil {
		for _, s := range hs.sessions.list() {
			for _, m := range s.Mappings {
				if m.Device == dev.Name() && dax(m) {
					out = append(out, daxUser(m.Device, m.Offset, m.Length, s.PID, ""))
				}
			}
		}
	}
	return out
}

// daxUser is a DAX mapping of device bytes off+n by process pid.
func daxUser(device string, off, n int64, pid int, more string) devUser {
	return devUser{kind: userDAX, device: device,
		who: fmt.Sprintf("DAX mapping of %s bytes %d+%d by pid %d%s%s", device, off, n, pid, comm(pid), more),
		fix: "unmap the DAX mappings (Mapping.Close) or end their processes"}
}

// fuseUsers describes h's opens of FUSE file h.Who: the loop devices on
// it, and opens by anything else.
func fuseUsers(dev string, h dm.HolderCount, loops []string) []devUser {
	var out []devUser
	for _, loop := range loops {
		who, fix := loop, "losetup -d "+loop
		if mnts := mountsOf(loop); len(mnts) > 0 {
			who += " (mounted on " + strings.Join(mnts, ", ") + ")"
			fix = "umount " + strings.Join(mnts, " ") + ", then " + fix
		}
		out = append(out, devUser{kind: dm.HolderFUSE, device: dev, who: "loop device " + who + " on FUSE file " + h.Who, fix: fix})
	}
	// A loop device holds its file open once; the other opens are programs.
	if n := h.N - len(loops); n > 0 {
		out = append(out, devUser{kind: dm.HolderFUSE, device: dev, who: fmt.Sprintf("%d open(s) of FUSE file %s", n, h.Who),
			fix: "close the open FUSE files (fuser -v " + h.Who + " names their processes), or as root: daxsnap disconnect " + dev})
	}
	return out
}

// loopDevices maps each file a loop device is attached to, to the loop
// devices (/dev/loopN) on it.
func loopDevices() map[string][]string {
	out := map[string][]string{}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		name := filepath.Base(filepath.Dir(filepath.Dir(f)))
		file := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		out[file] = append(out[file], "/dev/"+name)
	}
	return out
}

// mountsOf lists where block device dev is mounted.
func mountsOf(dev string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl == "-" && i+2 < len(fields) && len(fields) > 4 {
				if fields[i+2] == dev {
					out = append(out, pmem.UnescapeMount(fields[4]))
				}
				break
			}
		}
	}
	return out
}

// comm is " (NAME)" for process pid, or "" when it cannot be read.
func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return " (" + strings.TrimSpace(string(b)) + ")"
}

// describe says who holds dev open, for a message: the tables that map
// it, DAX mappings, NBD clients, FUSE files, API I/O, and any opens it
// cannot name (counted from dm's open count).
func (hs *holders) describe(dev *dm.Device) string {
	var parts []string
	named := 0
	if users := hs.users(dev.Name()); len(users) > 0 {
		sort.Strings(users)
		parts = append(parts, fmt.Sprintf("the tables of %s (they map %s%s)", strings.Join(users, ", "), MapperPrefix, dev.Name()))
		named += len(users)
	}
	var pids []string
	for _, s := range hs.sessions.of(dev.Name()) {
		pids = append(pids, fmt.Sprintf("pid %d", s.pid))
		named += s.n
	}
	if len(pids) > 0 {
		parts = append(parts, "DAX mappings of "+strings.Join(pids, ", "))
	}
	for _, h := range dev.Holders() {
		var who string
		switch h.Kind {
		case dm.HolderNBD:
			who = "an NBD client, " + h.Who
		case dm.HolderFUSE:
			who = fmt.Sprintf("an open FUSE file %s (a loop device or a program: `losetup -j`, `fuser` name them)", h.Who)
		case dm.HolderIO:
			who = "a " + h.Who + " through the API"
		default:
			continue // tables and DAX mappings: counted above
		}
		if h.N > 1 {
			who += fmt.Sprintf(" (%d opens)", h.N)
		}
		parts = append(parts, who)
		named += h.N
	}
	if rest := dev.Info().OpenCount - named; rest > 0 {
		parts = append(parts, fmt.Sprintf("%d other open(s)", rest))
	}
	if len(parts) == 0 {
		return "nobody any more"
	}
	return strings.Join(parts, "; ")
}
