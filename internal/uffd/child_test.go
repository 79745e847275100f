package uffd_test

// The client side of the cross-process tests: the test binary re-executed
// with UFFD_TEST_CHILD set, doing what the client library will do (map the
// volume, create and register a userfaultfd, hand it over with SCM_RIGHTS),
// then obeying one-line commands on a SOCK_SEQPACKET socket (descriptor 3).

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/uffd"
)

const childSock = 3

func TestMain(m *testing.M) {
	switch os.Getenv("UFFD_TEST_CHILD") {
	case "":
		os.Exit(m.Run())
	case "client":
		os.Exit(clientMain())
	case "unprivileged":
		os.Exit(unprivilegedMain())
	default:
		fmt.Fprintln(os.Stderr, "unknown UFFD_TEST_CHILD")
		os.Exit(2)
	}
}

func reply(format string, args ...any) {
	if _, err := unix.Write(childSock, fmt.Appendf(nil, format, args...)); err != nil {
		fmt.Fprintf(os.Stderr, "child: reply: %v\n", err)
		os.Exit(1)
	}
}

func clientMain() int {
	fail := func(err error) int { fmt.Fprintf(os.Stderr, "child: %v\n", err); return 1 }
	size, _ := strconv.Atoi(os.Getenv("UFFD_TEST_SIZE"))
	file, err := os.OpenFile(os.Getenv("UFFD_TEST_FILE"), os.O_RDWR, 0)
	if err != nil {
		return fail(err)
	}
	mem, err := unix.Mmap(int(file.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(err)
	}
	file.Close()
	fd, err := uffd.New(0)
	if err != nil {
		return fail(err)
	}
	if _, err := fd.API(wpShmem, uffd.FeatureThreadID|uffd.FeatureEventUnmap|uffd.FeatureEventRemove|uffd.FeatureEventRemap); err != nil {
		return fail(err)
	}
	if err := fd.Register(addrOf(mem), uintptr(size), uffd.ModeWP); err != nil {
		return fail(err)
	}
	err = fd.Control(func(raw int) {
		err = unix.Sendmsg(childSock, fmt.Appendf(nil, "hello %d %d", addrOf(mem), size), unix.UnixRights(raw), nil, 0)
	})
	if err != nil {
		return fail(err)
	}
	if os.Getenv("UFFD_TEST_KEEP") != "1" {
		fd.Close() // as the client library will: the daemon holds the only reference
	}
	regions := [][]byte{mem, nil}
	buf := make([]byte, 256)
	for {
		n, err := unix.Read(childSock, buf)
		if err != nil || n == 0 {
			return fail(fmt.Errorf("reading a command: %v (n=%d)", err, n))
		}
		f := strings.Fields(string(buf[:n]))
		arg := func(i int) int { v, _ := strconv.ParseInt(f[i], 0, 64); return int(v) }
		switch f[0] {
		case "store": // region offset value: replies "tid T", then "stored" when the store is done
			b, off, v := regions[arg(1)], arg(2), uint64(arg(3))
			go func() {
				runtime.LockOSThread()
				reply("tid %d", unix.Gettid())
				binary.LittleEndian.PutUint64(b[off:], v)
				reply("stored %d", off)
			}()
		case "load":
			reply("value %d", binary.LittleEndian.Uint64(regions[arg(1)][arg(2):]))
		case "madvise": // offset length advice
			err := unix.Madvise(mem[arg(1):arg(1)+arg(2)], arg(3))
			reply("madvised %v", err)
		case "munmap": // offset length
			_, _, e := unix.Syscall(unix.SYS_MUNMAP, addrOf(mem)+uintptr(arg(1)), uintptr(arg(2)), 0)
			reply("munmapped %d", int(e))
		case "mremap": // offset length: moves them to a new place, region 1
			dst, err := unix.Mmap(-1, 0, arg(2), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				return fail(err)
			}
			_, _, e := unix.Syscall6(unix.SYS_MREMAP, addrOf(mem)+uintptr(arg(1)), uintptr(arg(2)), uintptr(arg(2)),
				unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, addrOf(dst), 0)
			regions[1] = dst
			reply("mremapped %d %d", addrOf(dst), int(e))
		case "vmflags":
			reply("vmflags %s", vmFlags(addrOf(mem)))
		case "closeuffd":
			reply("closed %v", fd.Close())
		case "exit":
			return 0
		default:
			return fail(fmt.Errorf("unknown command %q", f[0]))
		}
	}
}

// vmFlags returns the VmFlags line of the mapping starting at addr, from
// /proc/self/smaps ("uw": registered with userfaultfd in write-protect mode).
func vmFlags(addr uintptr) string {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := false
	prefix := strconv.FormatUint(uint64(addr), 16) + "-"
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix) {
			found = true
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok && found {
			return strings.TrimSpace(rest)
		}
	}
	return "no-mapping"
}

// unprivilegedMain runs as an unprivileged user: New must fall back to a
// user-mode-only userfaultfd that still catches a store.
func unprivilegedMain() int {
	fail := func(err error) int { fmt.Fprintf(os.Stderr, "child: %v\n", err); return 1 }
	fd, err := uffd.New(0)
	if err != nil {
		return fail(err)
	}
	if _, err := fd.API(uffd.FeaturePagefaultFlagWP, 0); err != nil {
		return fail(err)
	}
	mem, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fail(err)
	}
	mem[0] = 1
	if err := fd.Register(addrOf(mem), uintptr(len(mem)), uffd.ModeWP); err != nil {
		return fail(err)
	}
	if err := fd.Protect(addrOf(mem), uintptr(len(mem))); err != nil {
		return fail(err)
	}
	done := make(chan struct{})
	go func() { mem[8] = 2; close(done) }()
	fd.SetDeadline(time.Now().Add(waitLimit))
	var msgs [1]uffd.Msg
	if _, err := fd.Wait(msgs[:], 0, uffd.BlockPoll); err != nil {
		return fail(err)
	}
	if err := fd.Unprotect(addrOf(mem), uintptr(len(mem))); err != nil {
		return fail(err)
	}
	<-done
	fmt.Printf("usermodeonly=%v fault=%v\n", fd.UserModeOnly(), msgs[0].Fault().Addr == addrOf(mem))
	return 0
}
