package client

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/wire"
)

func memfd(t *testing.T, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("clienttest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestBuild maps pieces of two files into one range in the grant's order.
func TestBuild(t *testing.T) {
	a, b := memfd(t, 4*4096), memfd(t, 4*4096)
	unix.Pwrite(a, []byte("A1"), 4096)
	unix.Pwrite(b, []byte("B0"), 0)
	unix.Pwrite(a, []byte("A3"), 3*4096)
	g := &wire.MapGrant{PageSize: 4096, Pieces: []wire.MapPiece{
		{Off: 0, Len: 4096, FD: 0, FileOffset: 4096},
		{Off: 4096, Len: 4096, FD: 1, FileOffset: 0},
		{Off: 8192, Len: 4096, FD: 0, FileOffset: 3 * 4096},
	}}
	mem, err := build(g, []int{a, b}, MapOptions{Length: 3 * 4096, Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer munmap(mem)
	for i, want := range []string{"A1", "B0", "A3"} {
		if got := string(mem[i*4096 : i*4096+2]); got != want {
			t.Errorf("page %d starts %q, want %q", i, got, want)
		}
	}
	mem[4096] = 'b' // shared: the file sees it
	one := make([]byte, 1)
	unix.Pread(b, one, 0)
	if one[0] != 'b' {
		t.Errorf("store through the mapping not in the file: %q", one)
	}
}

// TestBuild_BadGrant: a grant that does not describe the range is refused,
// never mapped.
func TestBuild_BadGrant(t *testing.T) {
	fd := memfd(t, 4*4096)
	piece := func(off, n int64, f int, foff int64) wire.MapPiece {
		return wire.MapPiece{Off: off, Len: n, FD: f, FileOffset: foff}
	}
	cases := []struct {
		name   string
		pieces []wire.MapPiece
		length int64
		msg    string
	}{
		{"gap", []wire.MapPiece{piece(0, 4096, 0, 0), piece(8192, 4096, 0, 0)}, 12288, "bad piece"},
		{"overlap", []wire.MapPiece{piece(0, 8192, 0, 0), piece(4096, 4096, 0, 0)}, 8192, "bad piece"},
		{"short", []wire.MapPiece{piece(0, 4096, 0, 0)}, 8192, "cover 4096 bytes, want 8192"},
		{"long", []wire.MapPiece{piece(0, 8192, 0, 0)}, 4096, "cover 8192 bytes, want 4096"},
		{"no-descriptor", []wire.MapPiece{piece(0, 4096, 1, 0)}, 4096, "bad piece"},
		{"negative-descriptor", []wire.MapPiece{piece(0, 4096, -1, 0)}, 4096, "bad piece"},
		{"unaligned-file", []wire.MapPiece{piece(0, 4096, 0, 512)}, 4096, "bad piece"},
		{"empty-piece", []wire.MapPiece{piece(0, 0, 0, 0), piece(0, 4096, 0, 0)}, 4096, "bad piece"},
		{"unaligned-length", []wire.MapPiece{piece(0, 4096, 0, 0)}, 4000, "not a multiple of the page size"},
		{"zero-length", nil, 0, "not a multiple of the page size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem, err := build(&wire.MapGrant{PageSize: 4096, Pieces: c.pieces}, []int{fd}, MapOptions{Length: c.length})
			if err == nil {
				munmap(mem)
				t.Fatal("bad grant accepted")
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q, want it to mention %q", err, c.msg)
			}
		})
	}
}

func TestPersist_Range(t *testing.T) {
	fd := memfd(t, 2*4096)
	mem, err := build(&wire.MapGrant{PageSize: 4096, Pieces: []wire.MapPiece{{Len: 8192}}}, []int{fd}, MapOptions{Length: 8192, Write: true})
	if err != nil {
		t.Fatal(err)
	}
	m := &Mapping{device: "t", mem: mem}
	defer munmap(mem)
	if err := m.Persist(100, 5000); err != nil {
		t.Errorf("Persist(100, 5000): %v", err)
	}
	for _, r := range [][2]int{{-1, 1}, {0, 8193}, {8192, 1}, {4096, -1}} {
		if err := m.Persist(r[0], r[1]); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("Persist(%d, %d) = %v, want an out-of-range error", r[0], r[1], err)
		}
	}
}
