package daemon_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/dm"
)

// Ensure that an offline check reports each line's capabilities and
// devices, and the precise error of a table that would not load.
func TestCheckTable(t *testing.T) {
	mem := filepath.Join(pmemDir(t), "m")
	if err := os.WriteFile(mem, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := daemon.CheckTable("0 1024 linear "+mem+" 0\n1024 8 zero", false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sectors != 1032 || len(rep.Lines) != 2 || rep.Capabilities != "none" {
		t.Fatalf("report = %+v", rep)
	}
	l := rep.Lines[0]
	if !strings.Contains(l.Capabilities, "dax") || len(l.Devices) != 1 || l.Devices[0].Kind != "tmpfs file" || l.Devices[0].Size != 1<<20 {
		t.Fatalf("line 1 = %+v", l)
	}
	if rep.Lines[1].Start != 1024 || rep.Lines[1].Capabilities != "none" {
		t.Fatalf("line 2 = %+v", rep.Lines[1])
	}

	for _, tc := range []struct{ table, want string }{
		{"0 4096 linear " + mem + " 0", "too small"},
		{"0 8 zero\n16 8 zero", "gap in table"},
		{"0 8 linear /dev/mapper/x 0", "offline check cannot open"},
		{"0 8 linear /dev/dm-0 0", "offline check cannot open"},
		{"0 8 linear " + mem + ".missing 0", "no such file"},
	} {
		_, err := daemon.CheckTable(tc.table, false)
		if !errors.Is(err, dm.ErrInvalidTable) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("check %q: %v, want invalid table mentioning %q", tc.table, err, tc.want)
		}
	}
}
