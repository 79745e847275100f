package backing_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// fill grows path by 4 KiB writes until the file system is full and
// returns how many bytes it took.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	var n int64
	for {
		if _, err := f.Write(page); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return n
		}
		n += int64(len(page))
	}
}

// Ensure that zeroing a memory region (TRIM and WRITE_ZEROES) keeps its
// memory reserved: once another file has taken every free page of the
// tmpfs, stores to the zeroed range still land, and it reads back zeroes.
// Punching holes gave the pages back, so the filler took them and the
// stores failed with an I/O error.
func TestMemory_zeroKeepsReservation(t *testing.T) {
	const region = 1 << 20
	for _, op := range []string{"discard", "write zeroes"} {
		t.Run(op, func(t *testing.T) {
			dir := testutil.Tmpfs(t, "size=4m")
			path := filepath.Join(dir, "region")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Fallocate(int(f.Fd()), 0, 0, region); err != nil {
				t.Fatalf("fallocate %s: %v", path, err)
			}
			f.Close()
			dev, err := backing.Open(path, backing.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			if _, err := dev.WriteAt(randomBytes(1, region), 0); err != nil {
				t.Fatal(err)
			}
			fill(t, filepath.Join(dir, "filler"))
			zero := dev.WriteZeroes
			if op == "discard" {
				zero = dev.Discard
			}
			if err := zero(0, region); err != nil {
				t.Fatalf("%s: %v", op, err)
			}
			if took := fill(t, filepath.Join(dir, "filler")); took > 0 {
				t.Errorf("after %s, another file could take %d more bytes of the tmpfs: the region gave its memory back", op, took)
			}
			got := make([]byte, region)
			if _, err := dev.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			for i, b := range got {
				if b != 0 {
					t.Fatalf("after %s, byte %d reads %#x, want 0", op, i, b)
				}
			}
			want := randomBytes(2, region)
			if _, err := dev.WriteAt(want, 0); err != nil {
				t.Fatalf("write after %s with the tmpfs full: %v", op, err)
			}
		})
	}
}
