// Package clienttest runs client processes for tests: the test binary
// re-executes itself (Start), and the child (Main) maps daxsnap volumes
// with package client and stores to them on command, so that write faults
// happen in another process, as they do in real use.
//
// Commands are lines on the child's stdin, a name and its arguments; the
// child answers each with one line, "ok [...]" or "err ...". The commands
// table in commands.go lists them with their arguments and what they do.
package clienttest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The test binary doubles as the client process: with childEnv set it reads
// commands on stdin and answers one line each on stdout.
const childEnv = "DAXSNAP_CLIENTTEST_CHILD"

// IsChild reports whether this process was started by Start: call Main then.
func IsChild() bool { return os.Getenv(childEnv) != "" }

const pageSize = 4096

// timings is "N P50 P99 MAX SUM" (nanoseconds) of the store latencies lat.
func timings(lat []time.Duration) string {
	if len(lat) == 0 {
		return "0 0 0 0 0"
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	return fmt.Sprint(len(lat), int64(lat[len(lat)/2]), int64(lat[len(lat)*99/100]), int64(lat[len(lat)-1]), int64(sum))
}

// sink keeps forkTouch's load from being optimised away.
var sink byte

// sigaction is the kernel's struct sigaction (x86-64 and arm64 layout).
type sigaction struct {
	handler, flags, restorer, mask uint64
}

// defaultSEGV resets SIGSEGV to its default action (die), so a bad store
// kills the process with SIGSEGV instead of a Go panic.
func defaultSEGV() {
	var sa sigaction
	syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(syscall.SIGSEGV), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
}

// forkTouch forks; the child first asks the kernel about the mapping's
// first page (msync: ENOMEM if the child has no such mapping), then loads
// it with SIGSEGV at its default action. It returns how the child ended.
func forkTouch(mem []byte) string {
	ptr := &mem[0]
	p := uintptr(unsafe.Pointer(ptr))
	// In the parent the mapping is there: the same call succeeds.
	if _, _, errno := syscall.Syscall(syscall.SYS_MSYNC, p, 4096, syscall.MS_ASYNC); errno != 0 {
		return "parent msync: " + errno.Error()
	}
	var sa sigaction
	syscall.ForkLock.Lock()
	pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if errno != 0 {
		syscall.ForkLock.Unlock()
		return "fork: " + errno.Error()
	}
	if pid == 0 {
		// The child: raw system calls only.
		if _, _, e := syscall.RawSyscall(syscall.SYS_MSYNC, p, 4096, syscall.MS_ASYNC); e != syscall.ENOMEM {
			syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 3, 0, 0)
		}
		syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(syscall.SIGSEGV), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
		sink = *ptr
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 4, 0, 0)
	}
	syscall.ForkLock.Unlock()
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(int(pid), &ws, 0, nil); err != nil {
		return "wait: " + err.Error()
	}
	return Describe(ws)
}

// Describe says how a process ended: "exit N" or "signal N".
func Describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + strconv.Itoa(int(ws.Signal()))
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

// Child is a client process running Main.
type Child struct {
	T     testing.TB
	Cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

// Start re-executes the test binary as a client of socket; the test's
// TestMain must call Main when IsChild.
func Start(t testing.TB, socket string) *Child {
	t.Helper()
	return StartAs(t, socket, User{})
}

// User is who a child runs as. The zero User is the test's own user.
type User struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups (none if empty)
	// Bin is a copy of the test binary that UID may execute (the one go
	// test built sits in a directory only its owner may enter).
	Bin string
}

// StartAs is Start with the child running as u (the test must be root;
// u needs search permission on the directories of Bin and socket).
func StartAs(t testing.TB, socket string, u User) *Child {
	t.Helper()
	bin := os.Args[0]
	if b := os.Getenv("DAXSNAP_CLIENTTEST_BIN"); b != "" {
		bin = b
	}
	if u.Bin != "" {
		bin = u.Bin
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+socket)
	if u.UID != 0 || u.GID != 0 || len(u.Groups) > 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}}
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Child{T: t, Cmd: cmd, in: in, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return c
}

// Do sends a command and returns the answer after "ok".
func (c *Child) Do(format string, args ...any) string {
	c.T.Helper()
	ans, ok := c.Try(10*time.Second, format, args...)
	if !ok {
		c.T.Fatalf("child: %s: no answer within 10s", fmt.Sprintf(format, args...))
	}
	if ans != "ok" && !strings.HasPrefix(ans, "ok ") {
		c.T.Fatalf("child: %s: %s", fmt.Sprintf(format, args...), ans)
	}
	return strings.TrimPrefix(strings.TrimPrefix(ans, "ok"), " ")
}

// Send sends a command without waiting.
func (c *Child) Send(format string, args ...any) {
	fmt.Fprintf(c.in, format+"\n", args...)
}

// Try sends a command and waits up to d for the answer.
func (c *Child) Try(d time.Duration, format string, args ...any) (string, bool) {
	c.Send(format, args...)
	return c.Wait(d)
}

// Wait waits up to d for an answer line.
func (c *Child) Wait(d time.Duration) (string, bool) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "child exited", true
		}
		return l, true
	case <-time.After(d):
		return "", false
	}
}

// Exit waits for the child to end and says how.
func (c *Child) Exit() string {
	c.T.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.T.Fatal("child did not exit")
	}
	return Describe(c.Cmd.ProcessState.Sys().(syscall.WaitStatus))
}
