package dm

import (
	"fmt"
	"strconv"
	"strings"
)

// TableLine is one parsed line of dmsetup's table text:
// `<start> <length> <target> [args...]`, start and length in sectors.
type TableLine struct {
	Start, Len Sector
	Type       string
	Args       []string
	Line       int // 1-based line number in the text it came from
}

// String prints the line as dmsetup table does, without the newline.
func (l TableLine) String() string {
	s := fmt.Sprintf("%d %d %s", l.Start, l.Len, l.Type)
	if len(l.Args) > 0 {
		s += " " + strings.Join(l.Args, " ")
	}
	return s
}

// ParseTable parses table text: one target per line, fields separated by
// blanks, blank lines and lines starting with '#' ignored. Lines must cover
// sectors 0..size in order with no gap or overlap and no zero length. It
// checks syntax and layout only; Build checks target types and arguments.
func ParseTable(text string) ([]TableLine, error) {
	var lines []TableLine
	var next Sector
	for i, raw := range strings.Split(text, "\n") {
		n := i + 1
		fields := strings.Fields(raw)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		l, err := parseLine(n, fields)
		if err != nil {
			return nil, err
		}
		if err := checkPlacement(l, next); err != nil {
			return nil, err
		}
		next = l.Start + l.Len
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return nil, &TableError{Reason: "table is empty", Hint: "give at least one line `<start> <length> <target> [args...]`"}
	}
	return lines, nil
}

const lineSyntax = "want `<start> <length> <target> [args...]` with start and length in 512-byte sectors"

func parseLine(n int, fields []string) (TableLine, error) {
	if len(fields) < 3 {
		return TableLine{}, &TableError{Line: n, Reason: fmt.Sprintf("%d field(s) %q", len(fields), strings.Join(fields, " ")), Hint: lineSyntax}
	}
	start, err := ParseSector(fields[0])
	if err != nil {
		return TableLine{}, &TableError{Line: n, Target: fields[2], Reason: "start: " + err.Error(), Hint: lineSyntax}
	}
	length, err := ParseSector(fields[1])
	if err != nil {
		return TableLine{}, &TableError{Line: n, Target: fields[2], Reason: "length: " + err.Error(), Hint: lineSyntax}
	}
	if length == 0 {
		return TableLine{}, &TableError{Line: n, Target: fields[2], Reason: "zero length", Hint: "every line must map at least one sector"}
	}
	if start+length > MaxSectors || start+length < start {
		return TableLine{}, &TableError{Line: n, Target: fields[2], Reason: fmt.Sprintf("sectors %d+%d exceed the largest device (%d sectors)", start, length, MaxSectors)}
	}
	args := fields[3:]
	if len(args) == 0 {
		args = nil
	}
	return TableLine{Start: start, Len: length, Type: fields[2], Args: args, Line: n}, nil
}

func checkPlacement(l TableLine, next Sector) error {
	switch {
	case l.Start > next:
		return &TableError{Line: l.Line, Target: l.Type,
			Reason: fmt.Sprintf("gap in table: line starts at sector %d but the previous lines end at sector %d (%d sectors unmapped)", l.Start, next, l.Start-next),
			Hint:   fmt.Sprintf("start this line at %d, or map sectors %d..%d (an `error` or `zero` line fills a hole)", next, next, l.Start)}
	case l.Start < next:
		return &TableError{Line: l.Line, Target: l.Type,
			Reason: fmt.Sprintf("overlap in table: line starts at sector %d but the previous lines already map up to sector %d", l.Start, next),
			Hint:   fmt.Sprintf("lines must be in order and start where the previous one ends: start this line at %d", next)}
	}
	return nil
}

// ParseSector parses a decimal sector number, as table fields and target
// arguments use them.
func ParseSector(s string) (Sector, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a sector number (decimal digits only)", s)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || Sector(v) > MaxSectors {
		return 0, fmt.Errorf("%q is too large (at most %d sectors)", s, MaxSectors)
	}
	return Sector(v), nil
}

// FormatTable prints lines as table text, one per line with a final newline.
func FormatTable(lines []TableLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// ParseOffset parses a target's sector-offset argument, telling a
// malformed number from one that is too large.
func ParseOffset(s string) (Sector, error) {
	v, err := ParseSector(s)
	if err == nil {
		return v, nil
	}
	if s != "" && strings.Trim(s, "0123456789") == "" {
		return 0, fmt.Errorf("invalid offset %q: larger than the largest sector number %d", s, MaxSectors)
	}
	return 0, fmt.Errorf("invalid offset %q: want a sector number", s)
}

// QuoteArgs renders arguments for an argument-count message: ` ("a b")`,
// or nothing when there are none.
func QuoteArgs(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return fmt.Sprintf(" (%q)", strings.Join(args, " "))
}
