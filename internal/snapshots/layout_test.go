package snapshots

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/exstore"
	"github.com/daxsnap/daxsnap/internal/state"
	"github.com/daxsnap/daxsnap/internal/target/snapshot"
)

// A snapshot line reads back as the targets' grammar has it and renders
// as either type with the same arguments; other tables are not snapshots.
func TestParseSnapLine(t *testing.T) {
	s, ok := parseSnapLine("0 2048 snapshot /dev/mapper/vol-real /s/cow/s1.cow p 8\n")
	if !ok || s.typ != snapshot.SnapshotType || s.size != 2048 || s.Origin != "/dev/mapper/vol-real" ||
		s.COW != "/s/cow/s1.cow" || s.Store != exstore.Persistent || s.Chunk != 8 {
		t.Fatalf("parseSnapLine = %+v, %v", s, ok)
	}
	if got, want := s.text(snapshot.MergeType), "0 2048 snapshot-merge /dev/mapper/vol-real /s/cow/s1.cow P 8\n"; got != want {
		t.Errorf("text(merge) = %q, want %q", got, want)
	}
	for _, text := range []string{
		"0 2048 linear /dev/x 0",
		"0 2048 snapshot-origin /dev/mapper/vol-real",
		"0 2048 snapshot /dev/mapper/vol-real /c X 8",    // no such store type
		"0 2048 snapshot /dev/mapper/vol-real /c P",      // no chunk size
		"0 8 snapshot /a /c P 8\n8 8 snapshot /a /c P 8", // two lines
		"",
	} {
		if s, ok := parseSnapLine(text); ok {
			t.Errorf("parseSnapLine(%q) = %+v, want not a snapshot line", text, s)
		}
	}
}

// originOver finds the origin of snapshot-origin and snapshot-merge
// tables, and of nothing else.
func TestOriginOver(t *testing.T) {
	for text, want := range map[string]string{
		"0 8 snapshot-origin /dev/mapper/vol-real":           "/dev/mapper/vol-real",
		"0 8 snapshot-merge /dev/mapper/vol-real /c.cow P 8": "/dev/mapper/vol-real",
	} {
		if got, ok := originOver(text); !ok || got != want {
			t.Errorf("originOver(%q) = %q, %v; want %q", text, got, ok, want)
		}
	}
	for _, text := range []string{"0 8 snapshot /dev/mapper/vol-real /c.cow P 8", "0 8 snapshot-origin", "0 8 linear /dev/x 0"} {
		if got, ok := originOver(text); ok {
			t.Errorf("originOver(%q) = %q, want none", text, got)
		}
	}
	if got, want := originTable(64, layoutOf("vol")), "0 64 snapshot-origin /dev/mapper/vol-real\n"; got != want {
		t.Errorf("originTable = %q, want %q", got, want)
	}
}

// The ops the verbs record are recognised, with their snapshot; others
// (the device verbs') are not.
func TestParseOp(t *testing.T) {
	p, ok := ParseOp("vol", state.Op{Verb: "snapshot-merge-finish", Arg: "s1"})
	if !ok || p != (Pending{origin: "vol", verb: "snapshot-merge-finish", name: "s1"}) {
		t.Fatalf("ParseOp = %+v, %v", p, ok)
	}
	for _, op := range []state.Op{{Verb: "create"}, {Verb: "remove"}, {Verb: "snapshot-create"}, {Verb: "resume", Arg: "vol"}, {}} {
		if p, ok := ParseOp("vol", op); ok {
			t.Errorf("ParseOp(%+v) = %+v, want not a snapshot op", op, p)
		}
	}
}

// Only a transient snapshot's table is lost with the daemon that ran it.
func TestLostOnRestart(t *testing.T) {
	if LostOnRestart("0 8 snapshot /dev/mapper/vol-real /c.cow N 8") == "" {
		t.Error("a transient snapshot comes back as if its exceptions were there")
	}
	for _, text := range []string{"0 8 snapshot /dev/mapper/vol-real /c.cow P 8", "0 8 snapshot-merge /dev/mapper/vol-real /c.cow P 8", "0 8 linear /dev/x 0"} {
		if why := LostOnRestart(text); why != "" {
			t.Errorf("LostOnRestart(%q) = %q, want nothing lost", text, why)
		}
	}
}

// COW sizes: a full copy holds every origin chunk, with a persistent
// store's header and metadata areas (one more than it fills); the
// smallest holds one exception; the default is 10% within those bounds.
func TestCOWSizes(t *testing.T) {
	for _, c := range []struct {
		origin      int64
		chunk       dm.Sector
		store       exstore.StoreType
		full, least int64
	}{
		{16 << 20, 8, exstore.Persistent, (1 + 16 + 1 + 4096) * 4096, 3 * 4096},
		{16 << 20, 8, exstore.Transient, 4096 * 4096, 4096},
		{1<<20 + 1, 16, exstore.Persistent, (1 + 0 + 1 + 129) * 8192, 3 * 8192},
		{1<<20 + 1, 16, exstore.Transient, 129 * 8192, 8192},
	} {
		if got := fullCOWSize(c.origin, c.chunk, c.store); got != c.full {
			t.Errorf("fullCOWSize(%d, %d, %v) = %d, want %d", c.origin, c.chunk, c.store, got, c.full)
		}
		if got := minCOWChunks(c.store) * c.chunk.Bytes(); got != c.least {
			t.Errorf("smallest %v COW with %d-sector chunks: %d bytes, want %d", c.store, c.chunk, got, c.least)
		}
		if got, want := defaultCOWSize(c.origin, c.chunk, c.store), min(max(c.origin/10, MinDefaultCOW), c.full); got != want {
			t.Errorf("defaultCOWSize(%d, %d, %v) = %d, want %d", c.origin, c.chunk, c.store, got, want)
		}
	}
}

// Policies are refused with what to give instead; percent defaults to
// LVM's 20.
func TestCheckAutoextend(t *testing.T) {
	for _, c := range []struct {
		threshold, percent int
		want               autoPolicy
	}{{0, 0, autoPolicy{}}, {70, 0, autoPolicy{70, 20}}, {50, 1000, autoPolicy{50, 1000}}, {100, 10, autoPolicy{100, 10}}} {
		got, err := checkAutoextend("test", c.threshold, c.percent)
		if err != nil || got != c.want {
			t.Errorf("checkAutoextend(%d, %d) = %+v, %v; want %+v", c.threshold, c.percent, got, err, c.want)
		}
	}
	if (autoPolicy{100, 10}).on() || !(autoPolicy{99, 10}).on() {
		t.Error("threshold 100 is off, 99 on")
	}
	for _, c := range [][2]int{{0, 10}, {49, 0}, {101, 0}, {70, -1}, {70, 1001}} {
		if _, err := checkAutoextend("test", c[0], c[1]); err == nil || !strings.Contains(err.Error(), "give") {
			t.Errorf("checkAutoextend(%d, %d) = %v, want a refusal saying what to give", c[0], c[1], err)
		}
	}
}

// tablesName finds a file in any argument of any line of any of the
// tables, by identity, and skips text that is no table.
func TestTablesName(t *testing.T) {
	dir := t.TempDir()
	cow := filepath.Join(dir, "s1.cow")
	if err := os.WriteFile(cow, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "..", filepath.Base(dir), "s1.cow") // the same file, spelled otherwise
	table := "0 8 linear /dev/x 0\n8 8 snapshot /dev/mapper/vol-real " + other + " P 8"
	if !tablesName(cow, "", table) {
		t.Errorf("%s not found in %q", cow, table)
	}
	if tablesName(cow, "0 8 linear /dev/x 0", "not a table "+cow) {
		t.Error("found in text that is no table")
	}
}
