package main

import (
	"encoding/json"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that `snapshot diff` prints the changed extents between two
// snapshots and to the live origin, as lines and as JSON, and refuses a
// pair in the wrong order with one line saying so.
func TestCLI_snapshotDiff(t *testing.T) {
	c := newCLI(t)
	c.fileVol("vol")
	api := apiclient.New(c.socket)
	defer api.Close()
	write := func(off int64, n int) {
		t.Helper()
		if err := api.WriteData(t.Context(), "vol", off, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	c.ok("snapshot", "create", "vol", "s1")
	write(8192, 100)   // chunk 2
	write(12288, 4096) // chunk 3
	c.ok("snapshot", "create", "vol", "s2")
	write(1<<20, 1) // chunk 256
	golden(t, "diff s1 s2", c.ok("snapshot", "diff", "s1", "s2"), "8192 8192\n")
	golden(t, "diff s1", c.ok("snapshot", "diff", "s1"), "8192 8192\n1048576 4096\n")
	golden(t, "diff s2 vol", c.ok("snapshot", "diff", "s2", "vol"), "1048576 4096\n")
	var d wire.SnapshotDiff
	if err := json.Unmarshal([]byte(c.ok("snapshot", "diff", "s1", "s2", "--json")), &d); err != nil {
		t.Fatal(err)
	}
	if d.From != "s1" || d.To != "s2" || d.Origin != "vol" || d.ChunkSize != 4096 || d.Size != 4<<20 || d.Changed != 8192 ||
		len(d.Extents) != 1 || d.Extents[0] != (wire.Extent{Off: 8192, Len: 8192}) || d.Full {
		t.Fatalf("diff --json: %+v", d)
	}
	c.fail("s2 was taken after s1", "snapshot", "diff", "s2", "s1")
}
