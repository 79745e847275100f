package persist

import (
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var variants = []struct {
	name string
	fn   func([]byte)
}{{"clwb", flushCLWB}, {"clflushopt", flushCLFLUSHOPT}, {"clflush", flushCLFLUSH}}

// cpuHas reports whether /proc/cpuinfo lists flag for the first CPU.
func cpuHas(t *testing.T, flag string) bool {
	t.Helper()
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatalf("read /proc/cpuinfo: %v", err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		if strings.HasPrefix(line, "flags") {
			return strings.Contains(" "+strings.TrimSpace(strings.SplitN(line, ":", 2)[1])+" ", " "+flag+" ")
		}
	}
	t.Fatal("/proc/cpuinfo has no flags line")
	return false
}

// Ensure that the instruction chosen from CPUID agrees with the kernel's view.
func TestPickWriteBack_matchesCPUInfo(t *testing.T) {
	want := "clflush"
	if cpuHas(t, "clwb") {
		want = "clwb"
	} else if cpuHas(t, "clflushopt") {
		want = "clflushopt"
	}
	if _, got := pickWriteBack(); got != want {
		t.Fatalf("pickWriteBack chose %s, /proc/cpuinfo says the best available is %s", got, want)
	}
}

// available skips variants this CPU lacks (executing them would be #UD).
func available(t *testing.T, name string) {
	t.Helper()
	if name != "clflush" && !cpuHas(t, name) {
		t.Skipf("this CPU has no %s instruction", name)
	}
}

// noFault runs fn and turns a memory fault into a test failure.
func noFault(t *testing.T, what string, fn func()) {
	t.Helper()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("%s faulted: %v", what, r)
		}
	}()
	fn()
}

// Ensure that every alignment and length of a heap buffer flushes without
// crashing and leaves the contents alone.
func TestFlush_anyAlignment(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			available(t, v.name)
			buf := make([]byte, 512)
			for i := range buf {
				buf[i] = byte(i * 7)
			}
			orig := bytes.Clone(buf)
			for off := 0; off < 130; off++ {
				for n := 0; off+n <= len(buf) && n < 260; n++ {
					noFault(t, fmt.Sprintf("%s of buf[%d:%d]", v.name, off, off+n), func() { v.fn(buf[off : off+n]) })
				}
			}
			if !bytes.Equal(buf, orig) {
				t.Fatal("flushing changed the buffer's contents")
			}
			noFault(t, v.name+" of nil", func() { v.fn(nil) })
		})
	}
	if err := Flush(make([]byte, 3)); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

// Ensure that a flush touches exactly the lines of the buffer: the pages
// before and after it are PROT_NONE, and touching them faults.
func TestFlush_staysInsideBuffer(t *testing.T) {
	page := os.Getpagesize()
	m, err := unix.Mmap(-1, 0, 3*page, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(m)
	mid := m[page : 2*page]
	if err := unix.Mprotect(mid, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		t.Fatalf("mprotect: %v", err)
	}
	cases := [][2]int{{0, 1}, {0, page}, {page - 1, page}, {page - 64, page}, {page - 65, page}, {63, 65}, {5, page - 3}}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			available(t, v.name)
			for _, c := range cases {
				noFault(t, fmt.Sprintf("%s of page[%d:%d]", v.name, c[0], c[1]), func() { v.fn(mid[c[0]:c[1]]) })
			}
		})
	}
}

// Ensure that the guard pages above really fault, so that the test can fail.
func TestFlush_guardPageFaults(t *testing.T) {
	m, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(m)
	faulted := func() (f bool) {
		old := debug.SetPanicOnFault(true)
		defer debug.SetPanicOnFault(old)
		defer func() { f = recover() != nil }()
		writeBack(m[:1])
		return false
	}()
	if !faulted {
		t.Fatalf("%s of a PROT_NONE page did not fault: TestFlush_staysInsideBuffer proves nothing here", writeBackName)
	}
}
