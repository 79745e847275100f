package testutil

import (
	"encoding/binary"
	"os"
	"testing"
	"unsafe"
)

// PageMapped reports whether the page holding b[0] is present in this
// process's page tables (/proc/self/pagemap, bit 63): whether something
// in the process has touched it through the mapping b is part of.
func PageMapped(t testing.TB, b []byte) bool {
	t.Helper()
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pagemap.Close()
	var e [8]byte
	page := uintptr(unsafe.Pointer(&b[0])) / uintptr(os.Getpagesize())
	if _, err := pagemap.ReadAt(e[:], int64(page)*8); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(e[:])>>63 != 0
}
