package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// reportField is one column of `dmsetup info -c` (libdm's report field
// table: the heading, the default width and whether it is a number, which
// is right-aligned).
type reportField struct {
	name, heading string
	width         int
	number        bool
	value         func(wire.Info) string
}

var reportFields = []reportField{
	{"name", "Name", 16, false, func(in wire.Info) string { return in.Name }},
	{"uuid", "UUID", 32, false, func(in wire.Info) string { return in.UUID }},
	{"read_ahead", "RAhead", 6, true, func(in wire.Info) string { return fmt.Sprint(in.ReadAhead) }},
	{"blkdevname", "BlkDevName", 16, false, func(in wire.Info) string { return fmt.Sprintf("dm-%d", in.Minor) }},
	{"attr", "Stat", 4, false, infoAttr},
	{"suspended", "Suspended", 9, false, func(in wire.Info) string {
		if in.Suspended {
			return "Suspended"
		}
		return "Active"
	}},
	{"readonly", "Read-only", 9, false, func(in wire.Info) string {
		if in.ReadOnly {
			return "read-only"
		}
		return "writeable"
	}},
	{"devno", "DevNo", 5, false, func(in wire.Info) string { return fmt.Sprintf("%d:%d", in.Major, in.Minor) }},
	{"major", "Maj", 3, true, func(in wire.Info) string { return fmt.Sprint(in.Major) }},
	{"minor", "Min", 3, true, func(in wire.Info) string { return fmt.Sprint(in.Minor) }},
	{"open", "Open", 4, true, func(in wire.Info) string { return fmt.Sprint(in.OpenCount) }},
	{"segments", "Targ", 4, true, func(in wire.Info) string { return fmt.Sprint(in.TargetCount) }},
	{"events", "Event", 6, true, func(in wire.Info) string { return fmt.Sprint(in.EventNr) }},
	{"device_count", "#Devs", 5, true, func(in wire.Info) string { return fmt.Sprint(len(in.Deps)) }},
}

// defaultReportFields are dmsetup info -c's columns.
const defaultReportFields = "name,major,minor,attr,open,segments,events,uuid"

// infoAttr is the Stat column: (L)ive, (I)nactive, (s)uspended, (r)ead-only
// or read-(w)rite.
func infoAttr(in wire.Info) string {
	b := []byte("---w")
	if in.LiveTable {
		b[0] = 'L'
	}
	if in.InactiveTable {
		b[1] = 'I'
	}
	if in.Suspended {
		b[2] = 's'
	}
	if in.ReadOnly {
		b[3] = 'r'
	}
	return string(b)
}

// reportOptions are dmsetup's report flags: -o, --noheadings, --separator.
type reportOptions struct {
	fields     string // -o: a list, or +LIST to add to the defaults
	noHeadings bool
	separator  string // "" unless --separator was given
}

// parseFields resolves -o to the report's columns.
func parseFields(list, defaults string, known []reportField) ([]reportField, error) {
	if list == "" {
		list = defaults
	} else if extra, ok := strings.CutPrefix(list, "+"); ok {
		list = defaults + "," + extra
	}
	var out []reportField
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, f := range known {
			if f.name == name {
				out, found = append(out, f), true
				break
			}
		}
		if !found {
			var names []string
			for _, f := range known {
				names = append(names, f.name)
			}
			return nil, usageError{fmt.Errorf("unrecognised field %q: known fields are %s", name, strings.Join(names, ","))}
		}
	}
	return out, nil
}

// formatReport prints rows as libdm's reports do: aligned columns under
// headings by default (each as wide as its default, its heading and its
// longest value, numbers right-aligned); --noheadings alone means
// unaligned with ":" between fields (dmsetup's old behaviour), and
// --separator means unaligned with that separator.
func formatReport(w io.Writer, fields []reportField, rows [][]string, o reportOptions) {
	sep, aligned := " ", true
	if o.noHeadings {
		sep, aligned = ":", false
	}
	if o.separator != "" {
		sep, aligned = o.separator, false
	}
	widths := make([]int, len(fields))
	for i, f := range fields {
		widths[i] = max(f.width, len(f.heading))
		for _, r := range rows {
			widths[i] = max(widths[i], len(r[i]))
		}
	}
	line := func(cells []string, heading bool) {
		for i, c := range cells {
			if i > 0 {
				io.WriteString(w, sep)
			}
			switch {
			case !aligned:
				io.WriteString(w, c)
			case fields[i].number && !heading:
				fmt.Fprintf(w, "%*s", widths[i], c)
			default:
				fmt.Fprintf(w, "%-*s", widths[i], c)
			}
		}
		io.WriteString(w, "\n")
	}
	if !o.noHeadings {
		var hs []string
		for _, f := range fields {
			hs = append(hs, f.heading)
		}
		line(hs, true)
	}
	for _, r := range rows {
		line(r, false)
	}
}

// formatInfoColumns prints `dmsetup info -c`.
func formatInfoColumns(w io.Writer, devs []wire.Info, o reportOptions) error {
	fields, err := parseFields(o.fields, defaultReportFields, reportFields)
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		io.WriteString(w, noDevices)
		return nil
	}
	var rows [][]string
	for _, in := range devs {
		var r []string
		for _, f := range fields {
			r = append(r, f.value(in))
		}
		rows = append(rows, r)
	}
	formatReport(w, fields, rows, o)
	return nil
}
