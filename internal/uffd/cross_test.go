package uffd_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/uffd"
)

// child is a client process (child_test.go) whose userfaultfd this test
// process, as the daemon, holds.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	sock   int
	stderr bytes.Buffer
	addr   uintptr // the client's mapping, in its address space
	size   int
	fd     *uffd.FD
}

// startChild starts a client that maps file (size bytes), registers the
// mapping in write-protect mode and sends its userfaultfd; with keep, the
// client keeps its own copy of the descriptor open.
func startChild(t *testing.T, file *os.File, size int, keep bool) *child {
	t.Helper()
	testutil.RequireRoot(t)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, sock: pair[0], size: size}
	theirs := os.NewFile(uintptr(pair[1]), "child socket")
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), "UFFD_TEST_CHILD=client", "UFFD_TEST_FILE="+file.Name(),
		"UFFD_TEST_SIZE="+strconv.Itoa(size), "UFFD_TEST_KEEP="+map[bool]string{true: "1"}[keep],
		// No preemption signals: a thread waiting on a fault stays waiting
		// until the handler wakes it, so "not woken yet" can be checked.
		"GODEBUG=asyncpreemptoff=1", "GORACE=atexit_sleep_ms=0")
	c.cmd.ExtraFiles = []*os.File{theirs}
	c.cmd.Stderr = &c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	t.Cleanup(c.stop)

	buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
	if !c.readable(waitLimit) {
		t.Fatalf("the client sent no userfaultfd in %v; its stderr: %s", waitLimit, &c.stderr)
	}
	n, oobn, _, _, err := unix.Recvmsg(c.sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscanf(string(buf[:n]), "hello %d %d", &c.addr, &c.size); err != nil {
		t.Fatalf("client said %q: %v; its stderr: %s", buf[:n], err, &c.stderr)
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cmsgs) != 1 {
		t.Fatalf("no SCM_RIGHTS message from the client (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("SCM_RIGHTS from the client: %v, %d descriptors", err, len(fds))
	}
	if c.fd, err = uffd.FromFD(fds[0]); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *child) stop() {
	if c.fd != nil {
		c.fd.Close() // wakes any store still waiting, so the client can exit
	}
	unix.Write(c.sock, []byte("exit"))
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil && c.cmd.ProcessState != nil && !c.cmd.ProcessState.Exited() {
			break // killed by the test
		}
		if err != nil {
			c.t.Errorf("client: %v; its stderr: %s", err, &c.stderr)
		}
	case <-time.After(waitLimit):
		c.cmd.Process.Kill()
		<-done
		c.t.Errorf("the client did not exit in %v; its stderr: %s", waitLimit, &c.stderr)
	}
	unix.Close(c.sock)
}

func (c *child) readable(d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(c.sock), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(d.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

func (c *child) send(format string, args ...any) {
	c.t.Helper()
	if _, err := unix.Write(c.sock, fmt.Appendf(nil, format, args...)); err != nil {
		c.t.Fatalf("sending to the client: %v", err)
	}
}

// expect reads the client's next message, which must start with word, and
// returns its fields after the word.
func (c *child) expect(word string) []string {
	c.t.Helper()
	if !c.readable(waitLimit) {
		c.t.Fatalf("no %q from the client in %v; its stderr: %s", word, waitLimit, &c.stderr)
	}
	buf := make([]byte, 256)
	n, err := unix.Read(c.sock, buf)
	if err != nil {
		c.t.Fatal(err)
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) == 0 || f[0] != word {
		c.t.Fatalf("the client said %q, want %q...", buf[:n], word)
	}
	return f[1:]
}

// expectAll reads one message starting with each of words, in any order.
func (c *child) expectAll(words ...string) {
	c.t.Helper()
	want := map[string]bool{}
	for _, w := range words {
		want[w] = true
	}
	buf := make([]byte, 256)
	for range words {
		if !c.readable(waitLimit) {
			c.t.Fatalf("the client did not say all of %v in %v; its stderr: %s", words, waitLimit, &c.stderr)
		}
		n, err := unix.Read(c.sock, buf)
		if err != nil {
			c.t.Fatal(err)
		}
		f := strings.Fields(string(buf[:n]))
		if len(f) == 0 || !want[f[0]] {
			c.t.Fatalf("the client said %q, want one of %v", buf[:n], words)
		}
		delete(want, f[0])
	}
}

// expectSilence checks that the client says nothing for d.
func (c *child) expectSilence(d time.Duration, why string) {
	c.t.Helper()
	if c.readable(d) {
		buf := make([]byte, 256)
		n, _ := unix.Read(c.sock, buf)
		c.t.Fatalf("%s: the client said %q", why, buf[:n])
	}
}

// store asks the client to store v at off of region (0: its mapping,
// 1: what mremap moved) and returns the storing thread's id.
func (c *child) store(region, off int, v uint64) int {
	c.t.Helper()
	c.send("store %d %d %d", region, off, v)
	tid, _ := strconv.Atoi(c.expect("tid")[0])
	return tid
}

func (c *child) vmFlags() []string {
	c.t.Helper()
	c.send("vmflags")
	return c.expect("vmflags")
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

// retryEAGAIN runs op until it stops failing with ErrLayoutChanging: the
// kernel clears that state when the process that sent the event runs again,
// a little after the handler has read it.
func retryEAGAIN(t *testing.T, op func() error) {
	t.Helper()
	for end := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Microsecond) {
		err := op()
		if !errors.Is(err, uffd.ErrLayoutChanging) || time.Now().After(end) {
			if err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

func nextEvent(t *testing.T, fd *uffd.FD, want uffd.Event) uffd.Msg {
	t.Helper()
	m := nextMsg(t, fd)
	if m.Event != want {
		t.Fatalf("got %v, want a %v event", &m, want)
	}
	return m
}

// The daemon side of a client's userfaultfd: it protects and unprotects
// the client's pages by the client's addresses, sees the client's faults and
// layout changes, and copies old data through its own mapping.
func TestCrossProcess(t *testing.T) {
	const pages = 8
	p := pageSize
	file := shmFile(t, pages*p)
	daemon := mapShared(t, file, pages*p)
	defer unix.Munmap(daemon)
	fill(daemon, 9)
	c := startChild(t, file, pages*p, false)
	at := func(i int) uintptr { return c.addr + uintptr(i*p) }

	if want := wpShmem | uffd.FeatureEventUnmap | uffd.FeatureEventRemove | uffd.FeatureEventRemap; c.fd.Features()&want != want {
		t.Fatalf("the adopted userfaultfd has features %v, want at least %v", c.fd.Features(), want)
	}
	if flags := c.vmFlags(); !hasFlag(flags, "uw") {
		t.Fatalf("the client's registered mapping lacks the uw flag in smaps: %v", flags)
	}
	if own := addrOf(daemon); own+uintptr(len(daemon)) <= c.addr || own >= c.addr+uintptr(c.size) {
		if err := c.fd.Protect(own, uintptr(p)); !errors.Is(err, uffd.ErrNotRegistered) {
			t.Fatalf("Protect at this process's own mapping's address: %v, want ErrNotRegistered (addresses are the client's)", err)
		}
	}

	t.Log("a write fault in the client, resolved by the daemon")
	if err := c.fd.Protect(at(1), uintptr(p)); err != nil {
		t.Fatal(err)
	}
	old := bytes.Clone(daemon[p : 2*p])
	tid := c.store(0, p+16, 0xC0FFEE)
	if flt := expectFault(t, c.fd, at(1)); flt.TID != tid {
		t.Errorf("fault by thread %d, want the client's storing thread %d", flt.TID, tid)
	}
	c.expectSilence(50*time.Millisecond, "before Unprotect")
	if !bytes.Equal(daemon[p:2*p], old) {
		t.Fatal("the client's store landed before the fault was resolved")
	}
	if err := c.fd.Unprotect(at(1), uintptr(p)); err != nil {
		t.Fatal(err)
	}
	c.expect("stored")
	if get64(daemon, p+16) != 0xC0FFEE {
		t.Fatal("the client's store is not in the file after the fault")
	}

	t.Log("UnprotectNoWake leaves the writer waiting until Wake")
	if err := c.fd.Protect(at(2), uintptr(p)); err != nil {
		t.Fatal(err)
	}
	c.store(0, 2*p, 1)
	expectFault(t, c.fd, at(2))
	if err := c.fd.UnprotectNoWake(at(2), uintptr(p)); err != nil {
		t.Fatal(err)
	}
	c.expectSilence(100*time.Millisecond, "after UnprotectNoWake")
	if err := c.fd.Wake(at(2), uintptr(p)); err != nil {
		t.Fatal(err)
	}
	c.expect("stored")

	t.Log("MADV_DONTNEED: a remove event; the protection survives")
	if err := c.fd.Protect(at(3), uintptr(2*p)); err != nil {
		t.Fatal(err)
	}
	c.send("madvise %d %d %d", 3*p, p, unix.MADV_DONTNEED)
	if s, e := nextEvent(t, c.fd, uffd.EventRemove).Range(); s != at(3) || e != at(4) {
		t.Fatalf("remove event [%#x, %#x), want [%#x, %#x)", s, e, at(3), at(4))
	}
	c.expect("madvised")
	c.store(0, 3*p, 3)
	expectFault(t, c.fd, at(3))
	if err := c.fd.Unprotect(at(3), uintptr(p)); err != nil {
		t.Fatal(err)
	}
	c.expect("stored")

	t.Log("MADV_REMOVE: the client zeroes a protected page without a write fault")
	c.send("madvise %d %d %d", 4*p, p, unix.MADV_REMOVE)
	if s, e := nextEvent(t, c.fd, uffd.EventRemove).Range(); s != at(4) || e != at(5) {
		t.Fatalf("remove event [%#x, %#x), want [%#x, %#x)", s, e, at(4), at(5))
	}
	c.expect("madvised")
	if !bytes.Equal(daemon[4*p:5*p], make([]byte, p)) {
		t.Fatal("MADV_REMOVE of a protected page did not zero it")
	}
	expectNoMsg(t, c.fd, "after MADV_REMOVE")

	t.Log("mremap: remap and unmap events; until they are read, range operations fail with EAGAIN; the moved range stays registered")
	c.send("mremap %d %d", 5*p, 2*p)
	if ready, err := c.fd.Poll(waitLimit); !ready || err != nil {
		t.Fatalf("Poll for the remap event: %v, %v", ready, err)
	}
	if err := c.fd.Protect(at(0), uintptr(p)); !errors.Is(err, uffd.ErrLayoutChanging) || !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("Protect with a remap event unread: %v, want ErrLayoutChanging", err)
	}
	from, to, n := nextEvent(t, c.fd, uffd.EventRemap).Remap()
	// Then the old place is reported unmapped, and mremap returns only once
	// both messages are read.
	c.expectSilence(50*time.Millisecond, "after reading only the remap event")
	if s, e := nextEvent(t, c.fd, uffd.EventUnmap).Range(); s != at(5) || e != at(7) {
		t.Fatalf("unmap event after the remap: [%#x, %#x), want the old place [%#x, %#x)", s, e, at(5), at(7))
	}
	moved := c.expect("mremapped")
	if dst, _ := strconv.ParseUint(moved[0], 10, 64); from != at(5) || to != uintptr(dst) || n != uintptr(2*p) || moved[1] != "0" {
		t.Fatalf("remap event %#x -> %#x len %#x; the client moved %#x bytes from %#x to %s (errno %s)", from, to, n, 2*p, at(5), moved[0], moved[1])
	}
	retryEAGAIN(t, func() error { return c.fd.Protect(to, uintptr(p)) })
	c.store(1, 8, 5)
	expectFault(t, c.fd, to)
	if err := c.fd.Unprotect(to, uintptr(p)); err != nil {
		t.Fatal(err)
	}
	c.expect("stored")
	if get64(daemon, 5*p+8) != 5 {
		t.Fatal("a store through the moved mapping did not reach the file")
	}

	t.Log("munmap: an unmap event, EAGAIN until read")
	c.send("munmap %d %d", 7*p, p)
	if ready, err := c.fd.Poll(waitLimit); !ready || err != nil {
		t.Fatalf("Poll for the unmap event: %v, %v", ready, err)
	}
	if err := c.fd.Protect(at(0), uintptr(p)); !errors.Is(err, uffd.ErrLayoutChanging) {
		t.Fatalf("Protect with an unmap event unread: %v, want ErrLayoutChanging", err)
	}
	if s, e := nextEvent(t, c.fd, uffd.EventUnmap).Range(); s != at(7) || e != at(8) {
		t.Fatalf("unmap event [%#x, %#x), want [%#x, %#x)", s, e, at(7), at(8))
	}
	retryEAGAIN(t, func() error { return c.fd.Protect(at(0), uintptr(p)) }) // EAGAIN until the client runs again
	if errno := c.expect("munmapped"); errno[0] != "0" {
		t.Fatalf("munmap in the client: errno %s", errno[0])
	}
}

// When the last reference to the userfaultfd is closed (the daemon closes
// it or dies), the kernel wakes the waiting writers and drops all
// protection and registration; while the client still holds a copy, closing
// the daemon's changes nothing.
func TestCrossProcess_HandlerCloses(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(map[bool]string{false: "client closed its copy", true: "client kept its copy"}[keep], func(t *testing.T) {
			p := pageSize
			file := shmFile(t, 2*p)
			daemon := mapShared(t, file, 2*p)
			defer unix.Munmap(daemon)
			c := startChild(t, file, 2*p, keep)
			if err := c.fd.Protect(c.addr, uintptr(2*p)); err != nil {
				t.Fatal(err)
			}
			c.store(0, 8, 42)
			expectFault(t, c.fd, c.addr)
			if err := c.fd.Close(); err != nil {
				t.Fatal(err)
			}
			c.fd = nil
			if keep {
				c.expectSilence(200*time.Millisecond, "the daemon closed its copy, the client still holds one")
				c.send("closeuffd")
				c.expectAll("closed", "stored") // in either order: the close wakes the store
			} else {
				c.expect("stored")
			}
			if get64(daemon, 8) != 42 {
				t.Fatal("the woken store did not land")
			}
			if flags := c.vmFlags(); hasFlag(flags, "uw") {
				t.Fatalf("the mapping is still registered after the userfaultfd was released: %v", flags)
			}
			c.store(0, p, 43) // page 1 was protected too
			c.expect("stored")
		})
	}
}

// When the client dies, even with a thread waiting on a fault, the daemon
// is not stuck: operations fail with ErrProcessGone, and no message comes.
func TestCrossProcess_ClientKilled(t *testing.T) {
	p := pageSize
	file := shmFile(t, p)
	c := startChild(t, file, p, false)
	if err := c.fd.Protect(c.addr, uintptr(p)); err != nil {
		t.Fatal(err)
	}
	c.store(0, 0, 1)
	expectFault(t, c.fd, c.addr)
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
	if err := c.fd.Unprotect(c.addr, uintptr(p)); !errors.Is(err, uffd.ErrProcessGone) || !errors.Is(err, unix.ESRCH) {
		t.Fatalf("Unprotect after the client was killed: %v, want ErrProcessGone", err)
	}
	if err := c.fd.Register(c.addr, uintptr(p), uffd.ModeWP); err == nil {
		t.Fatal("Register after the client was killed succeeded")
	} else {
		t.Logf("Register after the client was killed: %v", err)
	}
	expectNoMsg(t, c.fd, "after the client was killed")
	if ready, err := c.fd.Poll(10 * time.Millisecond); ready || err != nil {
		t.Fatalf("Poll after the client was killed: %v, %v", ready, err)
	}
}

// An unprivileged process gets a user-mode-only userfaultfd when the
// system refuses it more (vm.unprivileged_userfaultfd=0, /dev/userfaultfd
// closed to it), and it still catches stores.
func TestNew_Unprivileged(t *testing.T) {
	testutil.RequireRoot(t)
	sysctl, err := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
	if err != nil {
		testutil.Skip(t, "no /proc/sys/vm/unprivileged_userfaultfd: the kernel lacks CONFIG_USERFAULTFD")
	}
	wantUserOnly := strings.TrimSpace(string(sysctl)) == "0"
	if st, err := os.Stat("/dev/userfaultfd"); err == nil && st.Mode().Perm()&0o006 == 0o006 {
		wantUserOnly = false
	}
	dir, err := os.MkdirTemp("", "uffd-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "uffd.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "UFFD_TEST_CHILD=unprivileged", "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the unprivileged client: %v: %s", err, out)
	}
	if want := fmt.Sprintf("usermodeonly=%v fault=true\n", wantUserOnly); string(out) != want {
		t.Fatalf("the unprivileged client said %q, want %q", out, want)
	}
}
