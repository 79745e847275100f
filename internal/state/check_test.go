package state

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Ensure that CheckFile never panics on any bytes, and that whatever it
// passes bbolt opens, checks and reads without a fault or a panic (a
// fault in bbolt kills the process: this is what CheckFile is for).
func FuzzCheckFile(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		s.PutDevice(Device{Name: name, Live: "0 8 zero \n"})
	}
	s.PutRegion(Region{Name: "r", Path: "/dev/shm/r", Size: 4096})
	s.Close()
	good, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	for _, n := range []int{0, 100, 4096, 8192, 3*4096 + 2048, len(good) / 2} {
		f.Add(good[:n])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if CheckFile(data) != nil {
			return
		}
		dir := t.TempDir()
		path := filepath.Join(dir, FileName)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := openDB(path, 0)
		if err != nil {
			return
		}
		defer db.Close()
		db.View(func(tx *bolt.Tx) error { // read every record, as Devices and Regions do
			for _, name := range [][]byte{bucketMeta, bucketRegions, bucketDevices} {
				if b := tx.Bucket(name); b != nil {
					b.ForEach(func(k, v []byte) error { return nil })
				}
			}
			return nil
		})
	})
}

// Ensure that CheckFile passes the files bbolt writes.
func TestCheckFile_good(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 { // enough records for branch pages and overflow
		s.PutDevice(Device{Name: string(rune('a'+i%26)) + string(rune('a'+i/26)), Live: "0 8 zero \n", Inactive: string(make([]byte, i*7))})
	}
	s.Close()
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckFile(data); err != nil {
		t.Fatalf("CheckFile of a good file: %v", err)
	}
}
