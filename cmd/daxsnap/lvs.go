package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/daxsnap/daxsnap/internal/wire"
)

// LVM habits for snapshot list: -o FIELDS and --units, as lvs takes them.

// lvsFields are snapshot list -o's columns, named as lvs names them
// (lv_name, origin, lv_size, origin_size, data_percent, chunk_size,
// lv_attr) and daxsnap's own (cow, store, state).
var lvsFields = []reportField{
	{name: "lv_name", heading: "LV", width: 2},
	{name: "origin", heading: "Origin", width: 6},
	{name: "lv_attr", heading: "Attr", width: 10},
	{name: "lv_size", heading: "LSize", width: 5, number: true},
	{name: "origin_size", heading: "OSize", width: 5, number: true},
	{name: "data_percent", heading: "Data%", width: 5, number: true},
	{name: "snap_percent", heading: "Snap%", width: 5, number: true},
	{name: "chunk_size", heading: "Chunk", width: 5, number: true},
	{name: "cow", heading: "COW", width: 3},
	{name: "store", heading: "Store", width: 5},
	{name: "state", heading: "State", width: 5},
}

// defaultLvsFields are lvs's columns for a snapshot, less the volume
// group daxsnap has not.
const defaultLvsFields = "lv_name,lv_attr,lv_size,origin,data_percent"

// lvAttr is lvs's Attr of a snapshot: type s (S while merging),
// permission w or r, allocation i(nherited), state a (active) or I
// (invalid), target type s.
func lvAttr(s wire.Snapshot) string {
	b := []byte("swi-a-s---")
	if s.State == wire.SnapshotMerging {
		b[0] = 'S'
	}
	if s.ReadOnly {
		b[1] = 'r'
	}
	switch s.State {
	case wire.SnapshotInvalid, wire.SnapshotOverflow, wire.SnapshotMergeFailed, wire.SnapshotError:
		b[4] = 'I'
	}
	return string(b)
}

// formatUnits prints bytes in lvs's --units: h (the largest unit of at
// least 1, the default), b, s (sectors), k, m, g, t, p, e (powers of 1024)
// or K, M, G, T, P, E (powers of 1000); two decimals and the unit's
// letter, as lvs does ("8.00m", "4096B", "16S").
func formatUnits(n int64, unit string) (string, error) {
	switch unit {
	case "", "h", "H":
		base := 1024.0
		letters := "bkmgtpe"
		if unit == "H" {
			base, letters = 1000, "BKMGTPE"
		}
		i := 0
		v := float64(n)
		for v >= base && i < len(letters)-1 {
			v /= base
			i++
		}
		if i == 0 {
			return fmt.Sprintf("%d%c", n, 'B'), nil
		}
		return fmt.Sprintf("%.2f%c", v, letters[i]), nil
	case "b", "B":
		return fmt.Sprintf("%dB", n), nil
	case "s", "S":
		return fmt.Sprintf("%dS", n/512), nil
	}
	if len(unit) == 1 {
		if i := strings.IndexByte("kmgtpe", unit[0]); i >= 0 {
			return fmt.Sprintf("%.2f%s", float64(n)/math.Pow(1024, float64(i+1)), unit), nil
		}
		if i := strings.IndexByte("KMGTPE", unit[0]); i >= 0 {
			return fmt.Sprintf("%.2f%s", float64(n)/math.Pow(1000, float64(i+1)), unit), nil
		}
	}
	return "", usageError{fmt.Errorf("--units %q: give one of h, b, s, k, m, g, t, p, e (powers of 1024) or H, K, M, G, T, P, E (powers of 1000)", unit)}
}

// formatSnapshotReport prints snapshot list -o FIELDS [--units U].
func formatSnapshotReport(w io.Writer, snaps []wire.Snapshot, o reportOptions, unit string) error {
	fields, err := parseFields(o.fields, defaultLvsFields, lvsFields)
	if err != nil {
		return err
	}
	var rows [][]string
	for _, s := range snaps {
		var row []string
		for _, f := range fields {
			v, err := lvsValue(s, f.name, unit)
			if err != nil {
				return err
			}
			row = append(row, v)
		}
		rows = append(rows, row)
	}
	formatReport(w, fields, rows, o)
	return nil
}

func lvsValue(s wire.Snapshot, field, unit string) (string, error) {
	switch field {
	case "lv_name":
		return s.Name, nil
	case "origin":
		return s.Origin, nil
	case "lv_attr":
		return lvAttr(s), nil
	case "lv_size": // a snapshot's LSize in lvs is its COW's size
		return formatUnits(int64(s.Total)*512, unit)
	case "origin_size":
		return formatUnits(int64(s.Sectors)*512, unit)
	case "data_percent", "snap_percent":
		if s.Total == 0 {
			return "", nil
		}
		return fmt.Sprintf("%.2f", s.Usage), nil
	case "chunk_size":
		return formatUnits(s.ChunkSize, unit)
	case "cow":
		return s.COW, nil
	case "store":
		return s.Store, nil
	case "state":
		return snapshotState(s), nil
	}
	return "", fmt.Errorf("field %s has no value", field)
}
