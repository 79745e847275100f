// Command uffdwp measures the raw userfaultfd write-protect round trip on
// shared memory, the baseline daxsnap's copy-on-write fault path is compared
// with: a writer stores into a write-protected 4 KiB page of a tmpfs file,
// the handler reads the fault message, copies the page's old contents from
// its own (unregistered) mapping of the file into a buffer, lifts the
// protection (which wakes the writer), and the writer goes on. The writer
// times each store; the table shows those per-fault latencies.
//
//	uffdwp                                  # the whole matrix
//	uffdwp -handlers poll -writers process -cpus split
//
// Handlers: poll (poll(2) on a locked thread, then read), netpoll (Wait
// with BlockNetpoll: the goroutine parks in the Go runtime poller), busy
// (non-blocking reads in a loop), adaptive (Wait spinning -spin, then
// BlockPoll), adaptive-netpoll (spinning, then BlockNetpoll), spinner
// (adaptive through a uffd.Spinner of -spin, as daxsnap's handlers wait:
// no spin while it holds back a writer on the handler's CPU). Writers:
// thread (a locked OS thread of this process) or process (a child process,
// which created and registered the userfaultfd and passed it over
// SCM_RIGHTS, as a daxsnap client does). CPUs: any (no pinning), split
// (handler on the first allowed CPU, writer on the second), same (both on
// the first).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/uffd"
)

const (
	wpShmem   = uffd.FeaturePagefaultFlagWP | uffd.FeatureWPHugetlbfsShmem
	armedOff  = 0 // control page: the round the handler has protected, or abort
	abort     = ^uint64(0)
	doneOff   = 64 // control page: the round the writer has finished
	childSock = 3
)

var pageSize = os.Getpagesize()

func main() {
	handlers := flag.String("handlers", "poll,netpoll,busy,adaptive,adaptive-netpoll,spinner", "handler kinds to run")
	writers := flag.String("writers", "thread,process", "writer kinds to run")
	cpus := flag.String("cpus", "any,split,same", "CPU placements to run (busy and adaptive skip same: a spinning handler starves a writer on its CPU)")
	pages := flag.Int("pages", 256, "pages protected and written per round")
	rounds := flag.Int("rounds", 40, "measured rounds per repetition (one more, unmeasured, warms up)")
	repeat := flag.Int("repeat", 3, "repetitions, interleaved across the rows so that a burst of other load spreads over all of them")
	spin := flag.Duration("spin", 50*time.Microsecond, "how long the adaptive handler spins before it blocks")
	dir := flag.String("dir", "/dev/shm", "tmpfs directory for the shared file")
	child := flag.Bool("child", false, "internal: run as the writer process")
	file := flag.String("file", "", "internal: the shared file (with -child)")
	cpu := flag.Int("cpu", -1, "internal: the writer's CPU (with -child)")
	flag.Parse()
	if *child {
		if err := childMain(*file, *pages, *rounds+1, *cpu); err != nil {
			fmt.Fprintf(os.Stderr, "uffdwp writer: %v\n", err)
			os.Exit(1)
		}
		return
	}
	allowed, err := allowedCPUs()
	if err != nil || len(allowed) < 2 {
		fatalf("need 2 CPUs for the split placement (have %v, %v)", allowed, err)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("# uffdwp: %d faults per row (%d x %d rounds of %d pages), 4 KiB copy per fault, kernel %s, %d CPUs, GOMAXPROCS %d, load %s\n",
		*repeat**rounds**pages, *repeat, *rounds, *pages, kernelRelease(), len(allowed), runtime.GOMAXPROCS(0), strings.Join(strings.Fields(string(load))[:3], " "))
	var cfgs []config
	for _, w := range strings.Split(*writers, ",") {
		for _, h := range strings.Split(*handlers, ",") {
			for _, c := range strings.Split(*cpus, ",") {
				if c == "same" && (h == "busy" || strings.HasPrefix(h, "adaptive")) {
					continue
				}
				cfg := config{handler: h, writer: w, cpus: c, pages: *pages, rounds: *rounds + 1, spin: *spin, dir: *dir}
				cfg.handlerCPU, cfg.writerCPU = placement(c, allowed)
				cfgs = append(cfgs, cfg)
			}
		}
	}
	all := make([]results, len(cfgs))
	for range *repeat {
		for i, cfg := range cfgs {
			res, err := run(cfg)
			if err != nil {
				fatalf("%s/%s/%s: %v", cfg.handler, cfg.writer, cfg.cpus, err)
			}
			all[i].lat = append(all[i].lat, res.lat...)
			all[i].svc = append(all[i].svc, res.svc...)
		}
	}
	fmt.Printf("%-16s %-8s %-6s %8s %8s %8s %8s %8s %8s %8s\n",
		"handler", "writer", "cpus", "p50", "p90", "p99", "p99.9", "max", "mean", "svc50")
	for i, cfg := range cfgs {
		all[i].print(cfg)
	}
	fmt.Println("# µs per 4 KiB write fault as the writer times its store; svc50: median handler time per fault, from reading")
	fmt.Println("# the message to Unprotect's return (the copy and the writer's wake-up included; on one CPU the woken writer may run first)")
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "uffdwp: "+format+"\n", args...)
	os.Exit(1)
}

type config struct {
	handler, writer, cpus string
	handlerCPU, writerCPU int // -1: not pinned
	pages, rounds         int // rounds includes the warm-up round
	spin                  time.Duration
	dir                   string
}

func placement(c string, allowed []int) (handler, writer int) {
	switch c {
	case "split":
		return allowed[0], allowed[1]
	case "same":
		return allowed[0], allowed[0]
	case "any":
		return -1, -1
	}
	fatalf("unknown CPU placement %q (any, split, same)", c)
	return
}

// The shared file: a control page, the data pages, then the writer's
// latencies (one uint64 of nanoseconds per store).
func fileSize(pages, rounds int) int {
	return (1+pages)*pageSize + (rounds*pages*8+pageSize-1)/pageSize*pageSize
}

type results struct {
	lat []time.Duration // per fault, as the writer saw it
	svc []time.Duration // per fault, in the handler
}

// run measures one configuration.
func run(cfg config) (*results, error) {
	f, err := os.CreateTemp(cfg.dir, "uffdwp-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	size := fileSize(cfg.pages, cfg.rounds)
	if err := f.Truncate(int64(size)); err != nil {
		return nil, err
	}
	// Allocate every page now, so no fault pays for a tmpfs page.
	if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(size)); err != nil {
		return nil, err
	}
	daemon, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(daemon)

	var fd *uffd.FD
	var base uintptr // the writer's first data page, in the writer's address space
	var finish func() error
	switch cfg.writer {
	case "thread":
		client, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return nil, err
		}
		defer unix.Munmap(client)
		if fd, base, err = register(client, cfg.pages); err != nil {
			return nil, err
		}
		errc := make(chan error, 1)
		go func() { errc <- writer(client, cfg.pages, cfg.rounds, cfg.writerCPU) }()
		finish = func() error { return <-errc }
	case "process":
		if fd, base, finish, err = startWriter(f.Name(), cfg); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown writer %q (thread, process)", cfg.writer)
	}
	defer fd.Close()

	svc, herr := handle(fd, base, daemon, cfg)
	if herr != nil {
		atomic.StoreUint64((*uint64)(unsafe.Pointer(&daemon[armedOff])), abort)
		fd.Close() // wakes a writer left waiting, so finish returns
	}
	if err := finish(); err != nil || herr != nil {
		return nil, fmt.Errorf("handler: %v; writer: %v", herr, err)
	}
	all := unsafe.Slice((*uint64)(unsafe.Pointer(&daemon[(1+cfg.pages)*pageSize])), cfg.rounds*cfg.pages)
	res := &results{svc: svc}
	for _, ns := range all[cfg.pages:] { // round 1 warms up
		res.lat = append(res.lat, time.Duration(ns))
	}
	return res, nil
}

// register creates a userfaultfd and registers the data pages of mem.
func register(mem []byte, pages int) (*uffd.FD, uintptr, error) {
	fd, err := uffd.New(0)
	if err != nil {
		return nil, 0, err
	}
	if _, err := fd.API(wpShmem, 0); err != nil {
		fd.Close()
		return nil, 0, err
	}
	base := uintptr(unsafe.Pointer(&mem[pageSize]))
	if err := fd.Register(base, uintptr(pages*pageSize), uffd.ModeWP); err != nil {
		fd.Close()
		return nil, 0, err
	}
	return fd, base, nil
}

// handle runs the handler side of every round: protect all data pages, let
// the writer go, resolve its faults one by one, wait for the round's end.
func handle(fd *uffd.FD, base uintptr, daemon []byte, cfg config) ([]time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := pin(cfg.handlerCPU); err != nil {
		return nil, err
	}
	armed := (*uint64)(unsafe.Pointer(&daemon[armedOff]))
	done := (*uint64)(unsafe.Pointer(&daemon[doneOff]))
	buf := make([]byte, pageSize)
	msgs := make([]uffd.Msg, 16)
	seen := make([]int, cfg.pages) // the round each page was last resolved in
	spinner := &uffd.Spinner{Max: cfg.spin}
	var svc []time.Duration
	for r := 1; r <= cfg.rounds; r++ {
		if err := fd.Protect(base, uintptr(cfg.pages*pageSize)); err != nil {
			return nil, err
		}
		atomic.StoreUint64(armed, uint64(r))
		for resolved := 0; resolved < cfg.pages; {
			n, err := wait(fd, msgs, cfg, spinner)
			if err != nil {
				return nil, err
			}
			t0 := time.Now()
			for _, m := range msgs[:n] {
				if m.Event != uffd.EventPagefault {
					return nil, fmt.Errorf("unexpected message %v", m)
				}
				addr := m.Fault().Addr
				i := int(addr-base) / pageSize
				if addr < base || i >= cfg.pages {
					return nil, fmt.Errorf("fault at %#x outside the data pages", addr)
				}
				if seen[i] == r { // a repeat (the writer took a signal): it is awake already
					continue
				}
				copy(buf, daemon[(1+i)*pageSize:(2+i)*pageSize])
				if err := fd.Unprotect(addr, uintptr(pageSize)); err != nil {
					return nil, err
				}
				seen[i] = r
				resolved++
				if r > 1 {
					svc = append(svc, time.Since(t0))
				}
				t0 = time.Now()
			}
		}
		for atomic.LoadUint64(done) != uint64(r) {
			yield()
		}
	}
	return svc, nil
}

func wait(fd *uffd.FD, msgs []uffd.Msg, cfg config, spinner *uffd.Spinner) (int, error) {
	switch cfg.handler {
	case "poll":
		for {
			if _, err := fd.Poll(-1); err != nil {
				return 0, err
			}
			if n, err := fd.ReadEvents(msgs); n > 0 || err != nil {
				return n, err
			}
		}
	case "netpoll":
		return fd.Wait(msgs, 0, uffd.BlockNetpoll)
	case "adaptive":
		return fd.Wait(msgs, cfg.spin, uffd.BlockPoll)
	case "adaptive-netpoll":
		return fd.Wait(msgs, cfg.spin, uffd.BlockNetpoll)
	case "spinner":
		return spinner.Wait(fd, msgs, uffd.BlockPoll)
	case "busy":
		for {
			if n, err := fd.ReadEvents(msgs); n > 0 || err != nil {
				return n, err
			}
		}
	}
	return 0, fmt.Errorf("unknown handler %q (poll, netpoll, busy, adaptive, adaptive-netpoll, spinner)", cfg.handler)
}

// writer is the client: each round, once the handler has protected the
// data pages, it stores 8 bytes into each, timing every store, and records
// the times after the data pages.
func writer(mem []byte, pages, rounds, cpu int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := pin(cpu); err != nil {
		return err
	}
	armed := (*uint64)(unsafe.Pointer(&mem[armedOff]))
	done := (*uint64)(unsafe.Pointer(&mem[doneOff]))
	lat := unsafe.Slice((*uint64)(unsafe.Pointer(&mem[(1+pages)*pageSize])), rounds*pages)
	for i := range pages { // map every page writable before the first round
		mem[(1+i)*pageSize] = 1
	}
	for r := 1; r <= rounds; r++ {
		for a := atomic.LoadUint64(armed); a != uint64(r); a = atomic.LoadUint64(armed) {
			if a == abort {
				return fmt.Errorf("the handler gave up in round %d", r)
			}
			yield()
		}
		for i := range pages {
			p := (*uint64)(unsafe.Pointer(&mem[(1+i)*pageSize+8*(r%64)]))
			t0 := time.Now()
			*p = uint64(r)
			lat[(r-1)*pages+i] = uint64(time.Since(t0))
		}
		atomic.StoreUint64(done, uint64(r))
	}
	return nil
}

// startWriter starts the writer process; it sends its userfaultfd and the
// address of its first data page.
func startWriter(path string, cfg config) (*uffd.FD, uintptr, func() error, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, 0, nil, err
	}
	defer unix.Close(pair[0])
	theirs := os.NewFile(uintptr(pair[1]), "writer socket")
	defer theirs.Close()
	self, err := os.Executable()
	if err != nil {
		return nil, 0, nil, err
	}
	cmd := exec.Command(self, "-child", "-file", path, "-pages", strconv.Itoa(cfg.pages),
		"-rounds", strconv.Itoa(cfg.rounds-1), "-cpu", strconv.Itoa(cfg.writerCPU))
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, 0, nil, err
	}
	buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(pair[0], buf, oob, unix.MSG_CMSG_CLOEXEC)
	var base uint64
	if err == nil {
		_, err = fmt.Sscanf(string(buf[:n]), "base %d", &base)
	}
	var fds []int
	if err == nil {
		var cmsgs []unix.SocketControlMessage
		if cmsgs, err = unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cmsgs) == 1 {
			fds, err = unix.ParseUnixRights(&cmsgs[0])
		}
	}
	if err != nil || len(fds) != 1 {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, 0, nil, fmt.Errorf("no userfaultfd from the writer process: %v", err)
	}
	fd, err := uffd.FromFD(fds[0])
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, 0, nil, err
	}
	return fd, uintptr(base), cmd.Wait, nil
}

// childMain is the writer process: the client of a real deployment.
func childMain(path string, pages, rounds, cpu int) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	size := fileSize(pages, rounds)
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	f.Close()
	if err != nil {
		return err
	}
	fd, base, err := register(mem, pages)
	if err != nil {
		return err
	}
	err = fd.Control(func(raw int) {
		err = unix.Sendmsg(childSock, fmt.Appendf(nil, "base %d", base), unix.UnixRights(raw), nil, 0)
	})
	fd.Close() // the handler holds the only reference now
	if err != nil {
		return err
	}
	return writer(mem, pages, rounds, cpu)
}

func pin(cpu int) error {
	if cpu < 0 {
		return nil
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return nil
}

func allowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, err
	}
	var cpus []int
	for i := range 1024 {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus, nil
}

func yield() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }

func kernelRelease() string {
	var u unix.Utsname
	unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}

func (r *results) print(cfg config) {
	us := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 1, 64) }
	lat := slices.Clone(r.lat)
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	svc := slices.Clone(r.svc)
	slices.Sort(svc)
	fmt.Printf("%-16s %-8s %-6s %8s %8s %8s %8s %8s %8s %8s\n", cfg.handler, cfg.writer, cfg.cpus,
		us(q(0.5)), us(q(0.9)), us(q(0.99)), us(q(0.999)), us(lat[len(lat)-1]), us(sum/time.Duration(len(lat))), us(svc[len(svc)/2]))
}
