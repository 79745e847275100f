package snapshot

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
)

// Args are the arguments of a snapshot or snapshot-merge table line, the
// one grammar of them: the targets' constructor parses them, their table
// status prints them, and every other place that builds or reads a
// snapshot line goes through them, so there is no second parser to drift.
//
//	<origin> <COW device> <P|PO|N> <chunk size> [<#features> [discard_zeroes_cow] [discard_passdown_origin]]
//
// String prints them as the kernel's table does (canonical store type,
// features in the kernel's order and count), and ParseArgs(a.Fields())
// gives back a for every Args that ParseArgs returned.
type Args struct {
	Origin, COW string // device paths, as the table names them
	Store       exstore.StoreType
	// Chunk is the chunk size in sectors; 0 asks a persistent store for
	// its default (a transient store refuses it).
	Chunk    dm.Sector
	Features Features
}

// Features are a snapshot's optional feature arguments.
type Features struct {
	// DiscardZeroesCOW: a discard zeroes the COW chunks of the whole
	// chunks it covers (discard_zeroes_cow).
	DiscardZeroesCOW bool
	// DiscardPassdownOrigin: a discard also goes to the origin device
	// (discard_passdown_origin); it needs DiscardZeroesCOW.
	DiscardPassdownOrigin bool
}

// The feature argument names.
const (
	featureDiscardZeroes = "discard_zeroes_cow"
	featurePassdown      = "discard_passdown_origin"
)

// ArgsSyntax is the argument grammar, for error messages.
const ArgsSyntax = "<origin> <COW device> <P|PO|N> <chunk size> [<#features> [discard_zeroes_cow] [discard_passdown_origin]]"

// ParseArgs reads the arguments of a snapshot or snapshot-merge line, as
// the kernel's snapshot_ctr does. The error says which argument is wrong.
func ParseArgs(args []string) (Args, error) {
	if len(args) < 4 {
		return Args{}, fmt.Errorf("want at least 4 arguments <origin> <COW device> <P|PO|N> <chunk size>, got %d", len(args))
	}
	for i, what := range []string{"origin", "COW device"} {
		if args[i] == "" || strings.ContainsFunc(args[i], unicode.IsSpace) {
			return Args{}, fmt.Errorf("invalid %s %q: want a device path without blanks", what, args[i])
		}
	}
	store, err := exstore.ParseStoreType(args[2])
	if err != nil {
		return Args{}, err
	}
	chunk, err := dm.ParseSector(args[3])
	if err != nil {
		return Args{}, fmt.Errorf("invalid chunk size: %v", err)
	}
	f, err := parseFeatures(args[4:])
	if err != nil {
		return Args{}, err
	}
	return Args{Origin: args[0], COW: args[1], Store: store, Chunk: chunk, Features: f}, nil
}

// Parse reads the argument text of a snapshot or snapshot-merge line,
// fields separated by blanks (what follows the target type in the table).
func Parse(text string) (Args, error) { return ParseArgs(strings.Fields(text)) }

func parseFeatures(args []string) (Features, error) {
	var f Features
	if len(args) == 0 {
		return f, nil
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 0 || n > 2 {
		return f, fmt.Errorf("invalid number of feature arguments %q: want 0, 1 or 2", args[0])
	}
	if len(args)-1 != n {
		return f, fmt.Errorf("%d feature arguments announced, %d given", n, len(args)-1)
	}
	for _, name := range args[1:] {
		switch name {
		case featureDiscardZeroes:
			f.DiscardZeroesCOW = true
		case featurePassdown:
			f.DiscardPassdownOrigin = true
		default:
			return Features{}, fmt.Errorf("unrecognised feature requested: %q (known: %s, %s)", name, featureDiscardZeroes, featurePassdown)
		}
	}
	if f.DiscardPassdownOrigin && !f.DiscardZeroesCOW {
		return Features{}, errors.New("discard_passdown_origin feature depends on discard_zeroes_cow")
	}
	return f, nil
}

// Fields are the arguments as table fields, as the kernel prints them.
func (a Args) Fields() []string {
	out := []string{a.Origin, a.COW, a.Store.String(), strconv.FormatUint(uint64(a.Chunk), 10)}
	return append(out, a.Features.fields()...)
}

// String is the argument text of the table line, as the kernel prints it.
func (a Args) String() string { return strings.Join(a.Fields(), " ") }

// fields are the feature arguments, count first; none when there are none
// (the kernel's snapshot_status).
func (f Features) fields() []string {
	switch {
	case f.DiscardPassdownOrigin:
		return []string{"2", featureDiscardZeroes, featurePassdown}
	case f.DiscardZeroesCOW:
		return []string{"1", featureDiscardZeroes}
	}
	return nil
}

// Line is the one-line table of a target of type typ (SnapshotType or
// MergeType) with these arguments, covering len sectors.
func (a Args) Line(typ *dm.TargetType, len dm.Sector) dm.TableLine {
	return dm.TableLine{Start: 0, Len: len, Type: typ.Name, Args: a.Fields()}
}

// ParseOriginArgs reads the argument of a snapshot-origin line: the
// origin device.
func ParseOriginArgs(args []string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("want 1 argument <origin>, got %d", len(args))
	}
	return args[0], nil
}
