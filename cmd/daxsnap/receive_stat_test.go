package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSpoolSize_statFails: a spool whose stat fails is an error naming
// the spool, not a panic on a nil FileInfo.
func TestSpoolSize_statFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daxsnap-receive-vol.stream")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("DAXS"); err != nil {
		t.Fatal(err)
	}
	if n, err := spoolSize(f, path); err != nil || n != 4 {
		t.Fatalf("spoolSize of a 4-byte spool = %d, %v; want 4, nil", n, err)
	}
	f.Close() // its Stat now fails
	_, err = spoolSize(f, path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "cannot tell how much") {
		t.Fatalf("spoolSize of a spool whose stat fails = %v, want an error naming %s", err, path)
	}
}
