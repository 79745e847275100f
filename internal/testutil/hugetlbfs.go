package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// HugePool says where a test's huge pages come from.
type HugePool int

const (
	// Reserved uses huge pages already in the pool, free and unreserved,
	// and leaves /proc/sys/vm/nr_hugepages alone: that knob is global, and
	// other packages' tests, run at the same time by go test ./..., may
	// change it too (a read-add-write from two processes loses one update,
	// and a restore can shrink the pool under a test still using it).
	// .ci/run reserves pages; without them the test skips, or fails under
	// DAXSNAP_STRICT=1.
	Reserved HugePool = iota
	// Raise adds the test's pages to nr_hugepages and takes them off again
	// when the test ends.
	Raise
)

// nrHugepages is the knob Raise turns.
const nrHugepages = "/proc/sys/vm/nr_hugepages"

// Hugetlbfs mounts hugetlbfs on a temporary directory, with pages huge
// pages for the test from pool, and unmounts it in t.Cleanup. It returns
// the directory and the huge page size. It needs root and a kernel with
// hugetlbfs, and skips (fails under DAXSNAP_STRICT=1) without them or
// without the pages.
//
// Call it before anything that maps the directory's files: cleanups run
// last first, so those mappings go before the unmount.
func Hugetlbfs(t testing.TB, pages int64, pool HugePool) (dir string, pageSize int64) {
	t.Helper()
	RequireRoot(t)
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(fss), "\thugetlbfs\n") {
		Skip(t, "the kernel has no hugetlbfs (CONFIG_HUGETLBFS is off)")
	}
	switch pool {
	case Raise:
		writeKnob(t, readKnob(t)+pages)
		t.Cleanup(func() { writeKnob(t, readKnob(t)-pages) })
		if free := Meminfo(t, "HugePages_Free"); free < pages {
			Skip(t, fmt.Sprintf("the kernel found only %d free huge pages of %d KiB after raising %s by %d (memory too fragmented)",
				free, Meminfo(t, "Hugepagesize"), nrHugepages, pages))
		}
	default:
		// Free counts pages promised to mappings but not yet faulted in
		// (Rsvd): those are not available.
		if avail := Meminfo(t, "HugePages_Free") - Meminfo(t, "HugePages_Rsvd"); avail < pages {
			Skip(t, fmt.Sprintf("%d huge pages are free and unreserved, the test needs %d: reserve some as root "+
				"(echo 128 > %s; .ci/run does)", avail, pages, nrHugepages))
		}
	}
	dir = t.TempDir()
	if err := unix.Mount("none", dir, "hugetlbfs", 0, ""); err != nil {
		t.Fatalf("mount -t hugetlbfs none %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v (a device or client still maps its file?)", dir, err)
		}
	})
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	return dir, int64(sfs.Bsize) // hugetlbfs reports its page size as the block size
}

// HugetlbfsFile mounts a hugetlbfs as Hugetlbfs does and makes a file
// "mem" of pages huge pages in it, unwritten (hugetlbfs has no write(2):
// fill it through a mapping). It returns the file's path and the huge
// page size.
func HugetlbfsFile(t testing.TB, pages int64, pool HugePool) (path string, pageSize int64) {
	t.Helper()
	dir, hp := Hugetlbfs(t, pages, pool)
	path = filepath.Join(dir, "mem")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(pages * hp); err != nil {
		t.Fatalf("truncate %s to %d huge pages: %v", path, pages, err)
	}
	return path, hp
}

func readKnob(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile(nrHugepages)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writeKnob(t testing.TB, n int64) {
	t.Helper()
	if err := os.WriteFile(nrHugepages, []byte(strconv.FormatInt(n, 10)), 0o644); err != nil {
		t.Errorf("write %d to %s: %v", n, nrHugepages, err)
	}
}
