// Package clienttest runs client processes for tests: the test binary
// re-executes itself (Start), and the child (Main) maps daxsnap volumes
// with package client and stores to them on command, so that write faults
// happen in another process, as they do in real use.
//
// Commands (one answer line each, "ok [...]" or "err ..."):
//
//	map DEVICE OFF LEN rw|ro   map a range
//	fill SEED                  every word of page p := SEED<<32 | p
//	stream                     write seq+1 to page seq%P, seq = 0, 1, ..., until stop
//	causal W N                 writer W of N appends causal records until stop (causal.go)
//	access-causal W N          causal's records, 16 per Mapping.Access, until stop
//	stop                       stop streaming; answers "ok LAST" (writes done)
//	timed STRIDE               one store every STRIDE bytes, each timed; answers
//	                           "ok N P50 P99 MAX SUM" (nanoseconds)
//	loop STRIDE                the stores of timed, pass after pass, until halt
//	halt                       stop looping; answers as timed does, over every store
//	poke OFF                   store 0xa5 at OFF; answers once the store completed
//	peek OFF                   load the byte at OFF; answers it
//	segv OFF                   store with SIGSEGV at its default action
//	fork OFF                   a forked child probes OFF; answers how it ended
//	unmap                      close the mapping
//	quit                       close the session and exit
package clienttest

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/daxsnap/daxsnap/client"
)

// The test binary doubles as the client process: with childEnv set it reads
// commands on stdin and answers one line each on stdout.
const childEnv = "DAXSNAP_CLIENTTEST_CHILD"

// IsChild reports whether this process was started by Start: call Main then.
func IsChild() bool { return os.Getenv(childEnv) != "" }

const pageSize = 4096

// Main runs the client side: it dials the socket Start gave and serves
// commands on stdin until "quit" or end of input; it returns the exit status.
func Main() int {
	ctx := context.Background()
	c, err := client.Dial(ctx, os.Getenv(childEnv))
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	var m *client.Mapping
	var stop atomic.Bool
	var last atomic.Uint64
	done := make(chan struct{})
	var halt atomic.Bool
	var looped chan string // loop's answer
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		arg := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
		switch f[0] {
		case "map": // map DEVICE OFF LEN rw|ro
			m, err = c.Map(ctx, f[1], client.MapOptions{Offset: arg(2), Length: arg(3), Write: f[4] == "rw"})
			if ce, ok := err.(*client.Error); ok {
				fmt.Printf("err %v (code %s)\n", err, ce.Code)
				continue
			} else if err != nil {
				fmt.Println("err", err)
				continue
			}
			fmt.Println("ok")
		case "fill": // fill SEED: page p gets SEED<<32|p in every word
			mem := m.Bytes()
			for off := 0; off < len(mem); off += 8 {
				binary.LittleEndian.PutUint64(mem[off:], uint64(arg(1))<<32|uint64(off/pageSize))
			}
			fmt.Println("ok")
		case "stream": // write seq+1 to page seq%P, seq = 0, 1, ... until "stop"
			mem := m.Bytes()
			pages := uint64(len(mem) / pageSize)
			go func() {
				defer close(done)
				var seq uint64
				for ; !stop.Load(); seq++ {
					// One 8-byte store, also under -race (where PutUint64
					// becomes eight byte stores a cut can split).
					atomic.StoreUint64((*uint64)(unsafe.Pointer(&mem[(seq%pages)*pageSize])), seq+1)
				}
				last.Store(seq)
			}()
			fmt.Println("ok")
		case "causal": // causal W N: writer W of N logs causally ordered records (see causal.go)
			mem := m.Bytes()
			w, n := int(arg(1)), int(arg(2))
			go func() {
				defer close(done)
				last.Store(writeCausal(mem, w, n, &stop))
			}()
			fmt.Println("ok")
		case "access-causal": // access-causal W N: causal through Mapping.Access (maps again after a recall)
			w, n := int(arg(1)), int(arg(2))
			go func() {
				defer close(done)
				last.Store(accessCausal(ctx, m, w, n, &stop))
			}()
			fmt.Println("ok")
		case "stop":
			stop.Store(true)
			<-done
			fmt.Println("ok", last.Load())
		case "timed": // timed STRIDE: one store every STRIDE bytes, each timed
			mem := m.Bytes()
			stride := int(arg(1))
			var lat []time.Duration
			for off := 0; off < len(mem); off += stride {
				t0 := time.Now()
				mem[off]++
				lat = append(lat, time.Since(t0))
			}
			fmt.Println("ok", timings(lat))
		case "loop": // loop STRIDE: timed's stores, pass after pass, until halt
			mem := m.Bytes()
			stride := int(arg(1))
			halt.Store(false)
			ch := make(chan string, 1)
			looped = ch
			go func() {
				var lat []time.Duration
				for off := 0; !halt.Load(); off = (off + stride) % len(mem) {
					t0 := time.Now()
					mem[off]++
					lat = append(lat, time.Since(t0)) // before halt is seen: a held store counts
				}
				ch <- timings(lat)
			}()
			fmt.Println("ok")
		case "halt":
			if looped == nil {
				fmt.Println("err halt: no loop running")
				continue
			}
			halt.Store(true)
			fmt.Println("ok", <-looped)
			looped = nil
		case "access-fill": // access-fill SEED: fill through Mapping.Access (maps again after a recall)
			seed := uint64(arg(1))
			err := m.Access(ctx, func(mem []byte) error {
				for off := 0; off < len(mem); off += 8 {
					binary.LittleEndian.PutUint64(mem[off:], seed<<32|uint64(off/pageSize))
				}
				return nil
			})
			if err != nil {
				fmt.Println("err", err)
				continue
			}
			fmt.Println("ok")
		case "access-hold": // access-hold MS: hold an Access for MS milliseconds, in the background
			d := time.Duration(arg(1)) * time.Millisecond
			held := make(chan struct{})
			go m.Access(ctx, func([]byte) error { close(held); time.Sleep(d); return nil })
			<-held
			fmt.Println("ok")
		case "access-stream": // access-stream: stream's stores, 64 per Access, until "stop"
			go func() {
				defer close(done)
				var seq uint64
				for !stop.Load() {
					err := m.Access(ctx, func(mem []byte) error {
						pages := uint64(len(mem) / pageSize)
						for range 64 {
							atomic.StoreUint64((*uint64)(unsafe.Pointer(&mem[(seq%pages)*pageSize])), seq+1)
							seq++
						}
						return nil
					})
					if err != nil {
						fmt.Fprintln(os.Stderr, "access-stream:", err)
						break
					}
				}
				last.Store(seq)
			}()
			fmt.Println("ok")
		case "recalled": // recalled: whether the daemon took the mapping back
			fmt.Println("ok", m.Recalled())
		case "peek": // peek OFF: one load; answers the byte
			fmt.Println("ok", m.Bytes()[arg(1)])
		case "poke": // poke OFF: one store; the answer comes when it completed
			m.Bytes()[arg(1)] = 0xa5
			fmt.Println("ok")
		case "segv": // segv OFF: store with SIGSEGV at its default action
			defaultSEGV()
			m.Bytes()[arg(1)] = 1
			fmt.Println("ok stored")
		case "fork": // fork OFF: a forked child reads the mapping
			fmt.Println("ok", forkTouch(m.Bytes()[arg(1):]))
		case "unmap":
			if err := m.Close(); err != nil {
				fmt.Println("err", err)
				continue
			}
			fmt.Println("ok")
		case "quit":
			fmt.Println("ok")
			c.Close()
			return 0
		default:
			fmt.Println("err unknown command", f[0])
		}
	}
	return 0
}

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
