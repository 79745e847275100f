package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// noDevices is what dmsetup prints when there is nothing to list.
const noDevices = "No devices found\n"

// label pads a dmsetup info label so that values start at column 20.
func label(w io.Writer, name, value string) {
	fmt.Fprintf(w, "%-19s%s\n", name+":", value)
}

// formatInfo prints one device as `dmsetup info` does (long form), in
// the kernel's line order, then daxsnap's own lines (capabilities, owner,
// holders, note), and the blank line that ends each device. Like
// dmsetup, it prints Read Ahead only for a device with a live table
// (dmsetup reads it from the device node, which a device without one
// lacks).
func formatInfo(w io.Writer, in wire.Info) {
	label(w, "Name", in.Name)
	label(w, "State", infoState(in))
	if in.LiveTable {
		label(w, "Read Ahead", fmt.Sprint(in.ReadAhead))
	}
	label(w, "Tables present", infoTables(in))
	label(w, "Open count", fmt.Sprint(in.OpenCount))
	label(w, "Event number", fmt.Sprint(in.EventNr))
	label(w, "Major, minor", fmt.Sprintf("%d, %d", in.Major, in.Minor))
	label(w, "Number of targets", fmt.Sprint(in.TargetCount))
	if in.UUID != "" {
		fmt.Fprintf(w, "UUID: %s\n", in.UUID)
	}
	label(w, "Capabilities", fmt.Sprintf("%s (fixed: %s)", in.Capabilities, in.FixedCaps))
	label(w, "Owner", fmt.Sprintf("uid %d, gid %d, mode %s", in.UID, in.GID, in.Mode))
	if in.Durability != nil {
		label(w, "Durability", in.Durability.Text)
	}
	for _, h := range in.Holders {
		who := h.Who
		if h.PID > 0 && !strings.Contains(who, fmt.Sprintf("pid %d", h.PID)) {
			who = fmt.Sprintf("%s (pid %d, uid %d)", who, h.PID, h.UID)
		}
		label(w, "Holder", fmt.Sprintf("%s x%d: %s", h.Kind, h.Count, who))
	}
	if in.Note != "" {
		label(w, "Note", in.Note)
	}
	fmt.Fprintln(w)
}

func infoState(in wire.Info) string {
	s := "ACTIVE"
	if in.Suspended {
		s = "SUSPENDED"
	}
	if in.ReadOnly {
		s += " (READ-ONLY)"
	}
	if in.DeferredRemove {
		s += " (DEFERRED REMOVE)"
	}
	return s
}

func infoTables(in wire.Info) string {
	switch {
	case in.LiveTable && in.InactiveTable:
		return "LIVE & INACTIVE"
	case in.LiveTable:
		return "LIVE"
	case in.InactiveTable:
		return "INACTIVE"
	}
	return "None"
}

// textLines says how formatText labels the lines of a device's text.
type textLines int

const (
	asIs      textLines = iota // one named device: its text as it is
	namedEach                  // every device: each line prefixed with "name: "
)

// formatText prints table or status text as dmsetup does: as it is for a
// named device, each line prefixed with "name: " when listing them all;
// a device without a table prints an empty line (after the prefix).
func formatText(w io.Writer, t wire.Text, how textLines) {
	lines := strings.SplitAfter(t.Text, "\n")
	if t.Text == "" {
		lines = []string{"\n"}
	} else if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for _, l := range lines {
		if how == namedEach {
			fmt.Fprintf(w, "%s: ", t.Name)
		}
		if !strings.HasSuffix(l, "\n") {
			l += "\n"
		}
		io.WriteString(w, l)
	}
}

// formatTargets prints `dmsetup targets`.
func formatTargets(w io.Writer, targets []wire.Target) {
	for _, t := range targets {
		fmt.Fprintf(w, "%-16s v%d.%d.%d\n", t.Name, t.Version[0], t.Version[1], t.Version[2])
	}
}

// lsStyle is how formatLs prints a device's numbers.
type lsStyle int

const (
	lsPlain      lsStyle = iota // dmsetup ls: "name<TAB>(254:0)"
	lsTarget                    // dmsetup ls --target TYPE: "name<TAB>(254, 0)", as dmsetup prints it
	lsBlkdevname                // dmsetup ls -o blkdevname: "name<TAB>(dm-0)"
)

// formatLs prints `dmsetup ls`: each name, a tab, and the device's
// major:minor.
func formatLs(w io.Writer, devs []wire.Info, style lsStyle) {
	if len(devs) == 0 {
		io.WriteString(w, noDevices)
		return
	}
	for _, d := range devs {
		switch style {
		case lsTarget:
			fmt.Fprintf(w, "%s\t(%d, %d)\n", d.Name, d.Major, d.Minor)
		case lsBlkdevname:
			fmt.Fprintf(w, "%s\t(dm-%d)\n", d.Name, d.Minor)
		default:
			fmt.Fprintf(w, "%s\t(%d:%d)\n", d.Name, d.Major, d.Minor)
		}
	}
}

// formatPmem prints the regions as a table.
func formatPmem(w io.Writer, regions []wire.Pmem) {
	if len(regions) == 0 {
		io.WriteString(w, "No pmem regions: create one with `daxsnap pmem create NAME --size 64M`\n")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tFS\tOWNER\tMODE\tPATH\tUSED BY")
	for _, p := range regions {
		users := strings.Join(p.UsedBy, ",")
		if users == "" {
			users = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d:%d\t%s\t%s\t%s\n", p.Name, formatSize(p.Size), p.Filesystem, p.UID, p.GID, p.Mode, p.Path, users)
	}
	tw.Flush()
	for _, p := range regions {
		if p.Note != "" {
			fmt.Fprintf(w, "%s: %s\n", p.Name, p.Note)
		}
	}
}

// formatVersion prints client and daemon versions as dmsetup version
// prints its library's and the kernel driver's: the client is the
// library scripts call, the daemon the driver behind it.
func formatVersion(w io.Writer, client string, v *wire.Version) {
	label(w, "Library version", "daxsnap "+client)
	if v != nil {
		label(w, "Driver version", fmt.Sprintf("daxsnap %s (API %s, %s)", v.Version, v.API, v.GoVersion))
	}
}

// formatCheck prints what `table check` found.
func formatCheck(w io.Writer, r wire.CheckReport) {
	fmt.Fprintf(w, "table maps %d sectors (%s) in %d line(s); capabilities: %s\n",
		r.Sectors, formatSize(int64(r.Sectors)*512), len(r.Lines), r.Capabilities)
	for _, l := range r.Lines {
		desc := strings.TrimSpace(l.Type + " " + strings.Join(l.Args, " "))
		fmt.Fprintf(w, "line %d: sectors %d-%d (%d): %s: %s\n", l.Line, l.Start, l.Start+l.Length-1, l.Length, desc, l.Capabilities)
		for _, d := range l.Devices {
			fmt.Fprintf(w, "  %s: %s, %d bytes, %s\n", d.Name, d.Kind, d.Size, d.Capabilities)
		}
	}
}

// formatSessions prints one line per mapping, then the audit's findings.
func formatSessions(w io.Writer, sessions []wire.DAXSession) {
	if len(sessions) == 0 {
		io.WriteString(w, "No DAX sessions\n")
		return
	}
	fmt.Fprintf(w, "%-8s %-6s %-16s %12s %12s %-4s %8s %6s\n", "PID", "UID", "DEVICE", "OFFSET", "LENGTH", "MODE", "FAULTS", "HELD")
	for _, s := range sessions {
		for _, m := range s.Mappings {
			mode := "ro"
			if m.Write {
				mode = "rw"
			}
			fmt.Fprintf(w, "%-8d %-6d %-16s %12d %12d %-4s %8d %6d\n", s.PID, s.UID, m.Device, m.Offset, m.Length, mode, m.Faults, m.Held)
		}
		for _, p := range s.Problems {
			fmt.Fprintf(w, "pid %d: PROBLEM: %s\n", s.PID, p)
		}
	}
}
