// Command cutstall measures what a periodic consistent cut costs the
// programs storing into a mapped volume: writer processes store
// continuously, each store timed, first for a quiet stretch, then while a
// command that cuts (`daxsnap snapshot create`, a checkpoint) runs every
// interval. It prints, per stretch, the stores' p50/p99/p99.9 and the
// longest single store (the writer's stall), merged over the writers.
//
//	cutstall -socket DAX.SOCK -device vol -size 1G -cut 'daxsnap ... snapshot create vol s' -uncut '...remove s'
//
// The same measurement for a Redis peer (-redis ADDR): one client issues
// SETs in a loop (each timed) while BGSAVE runs every interval; the
// fork time (latest_fork_usec) and the peak memory (PSS of the server and
// its forked child, summed) are reported as well.
//
// Writers: -writers processes, each mapping its share of the volume
// (the whole volume is mapped, so the cut sweeps all of it), populating
// every page once, then storing 8-byte words at random places of a hot
// range of -hot bytes inside its share (stores over the whole share would
// make every store after a cut a copy-on-write fault, whatever the cut).
// Output: one line per stretch, "stretch NAME stores N p50 P p99 P p999 P
// max M cut-max C" (nanoseconds), parsed by bench/checkpoint.sh.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/client"
)

var (
	socket   = flag.String("socket", "", "the daemon's DAX session socket (dax.sock)")
	device   = flag.String("device", "vol", "volume to map")
	sizeFlag = flag.String("size", "1G", "bytes of the volume to map (suffix K, M, G)")
	writers  = flag.Int("writers", 4, "writer processes")
	hotFlag  = flag.String("hot", "16M", "bytes each writer stores into, at random (suffix K, M, G)")
	quiet    = flag.Duration("quiet", 5*time.Second, "stretch without cuts")
	cuts     = flag.Int("cuts", 5, "cuts in the second stretch")
	every    = flag.Duration("every", time.Second, "interval between cuts")
	cutCmd   = flag.String("cut", "", "shell command that cuts (e.g. daxsnap snapshot create)")
	uncutCmd = flag.String("uncut", "", "shell command run after each cut, not timed as part of it (e.g. snapshot remove)")
	firstCmd = flag.String("first", "", "shell command run once before the quiet stretch, its stores reported apart as stretch first (e.g. the first checkpoint, which writes the whole volume, so that the cuts are the periodic ones)")
	redis    = flag.String("redis", "", "measure a Redis server at this address instead: SETs in a loop, BGSAVE as the cut")
	redisPID = flag.Int("redis-pid", 0, "the Redis server's pid, for its memory")
	keys     = flag.Int("keys", 1000000, "keys the Redis dataset holds (key:N, as DEBUG POPULATE names them)")
	child    = flag.Int("child", -1, "internal: run as writer N")
	metrics  = flag.String("metrics", "", "the daemon's API socket (daxsnap.sock): report the daemon's own hold per cut and per uncut, from /metrics before and after each")
)

func main() {
	flag.Parse()
	var err error
	switch {
	case *child >= 0:
		err = writer(*child)
	case *redis != "":
		err = runRedis()
	default:
		err = runDAX()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cutstall:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	mul := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mul, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mul, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "K"):
		mul, s = 1<<10, strings.TrimSuffix(s, "K")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number of bytes with an optional K, M or G suffix", s)
	}
	return n * mul, nil
}

// hist is a log-linear latency histogram: 16 sub-buckets per power of 2.
type hist struct {
	Counts  [64 * 16]int64
	Max     int64
	Blocked int64 // the longest a writer slept in a window of stores
}

func bucket(ns int64) int {
	if ns < 16 {
		return int(max(ns, 0))
	}
	e := bits.Len64(uint64(ns)) - 1 // ns in [2^e, 2^(e+1))
	return e*16 + int((ns>>(e-4))&15)
}

// upper is the upper bound of bucket i.
func upper(i int) int64 {
	if i < 16 {
		return int64(i)
	}
	e, sub := i/16, int64(i%16)
	if e < 4 { // not used: bucket puts 16 ns and more from 64 on
		return int64(i)
	}
	return (16 + sub + 1) << (e - 4)
}

func (h *hist) add(ns int64) {
	h.Counts[bucket(ns)]++
	if ns > h.Max {
		h.Max = ns
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.Max = max(h.Max, o.Max)
	h.Blocked = max(h.Blocked, o.Blocked)
}

func (h *hist) total() (n int64) {
	for _, c := range h.Counts {
		n += c
	}
	return n
}

func (h *hist) quantile(q float64) int64 {
	n := h.total()
	want := int64(q * float64(n))
	var seen int64
	for i, c := range h.Counts {
		seen += c
		if seen > want {
			return min(upper(i), h.Max)
		}
	}
	return h.Max
}

// over counts the stores that took more than ns (to the bucket).
func (h *hist) over(ns int64) (n int64) {
	for i, c := range h.Counts {
		if upper(i) > ns {
			n += c
		}
	}
	return n
}

func (h *hist) line(name string, cutMax time.Duration) string {
	return fmt.Sprintf("stretch %s stores %d p50 %d p99 %d p999 %d max %d over2ms %d blocked %d cut-max %d",
		name, h.total(), h.quantile(0.5), h.quantile(0.99), h.quantile(0.999), h.Max, h.over(2e6), h.Blocked, cutMax.Nanoseconds())
}

// writer is one writer process: it maps its share, populates it, says
// "ready", then stores until told "stop"; "phase N" switches the
// histogram it records into (0 quiet, 1 cuts, 2 first), "report N" prints
// that one as JSON.
func writer(i int) error {
	debug.SetGCPercent(-1) // no collection (and its stop) while storing
	size, err := parseSize(*sizeFlag)
	if err != nil {
		return err
	}
	hot, err := parseSize(*hotFlag)
	if err != nil {
		return err
	}
	share := size / int64(*writers) &^ (2<<20 - 1)
	if share == 0 || hot > share {
		return fmt.Errorf("%d bytes in %d shares of %d: want shares of at least the hot range, %d bytes", size, *writers, share, hot)
	}
	ctx := context.Background()
	c, err := client.Dial(ctx, *socket)
	if err != nil {
		return err
	}
	m, err := c.Map(ctx, *device, client.MapOptions{Offset: int64(i) * share, Length: share, Write: true, OnRecall: func() {}})
	if err != nil {
		return err
	}
	mem := m.Bytes()
	for p := 0; p < len(mem); p += 4096 {
		mem[p] = 1
	}
	// The hot range: a random place in the share.
	base := rand.Int64N(share/hot) * hot
	words := uint64(hot / 8)
	var phase atomic.Int32
	var stop atomic.Bool
	hs := [3]*hist{{}, {}, {}} // quiet, cuts, first
	var mu sync.Mutex          // hs while reporting
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Blocked time: of each window of 1024 stores, the wall time
		// neither on a CPU (the thread's CPU clock) nor waiting for one
		// (schedstat's run_delay): the time the writer slept, in a
		// write fault the daemon had not resolved yet. On a machine with
		// more runnable threads than CPUs the stores' wall time is mostly
		// the wait for a CPU, which says nothing of the cut.
		runtime.LockOSThread()
		sched, err := os.Open("/proc/thread-self/schedstat")
		if err != nil {
			panic(err)
		}
		buf := make([]byte, 128)
		clock := func() (wall, cpu, wait int64) {
			var ts unix.Timespec
			unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
			n, _ := sched.ReadAt(buf, 0)
			f := strings.Fields(string(buf[:n]))
			if len(f) >= 2 {
				wait, _ = strconv.ParseInt(f[1], 10, 64)
			}
			return time.Now().UnixNano(), ts.Nano(), wait
		}
		w0, c0, d0 := clock()
		rng := rand.Uint64() | 1
		local := [3]*hist{{}, {}, {}}
		flush := func() { // allocates nothing: a collection would stop the writer
			mu.Lock()
			for k := range hs {
				hs[k].merge(local[k])
				*local[k] = hist{}
			}
			mu.Unlock()
		}
		for n := 1; !stop.Load(); n++ {
			if n&1023 == 0 {
				w, c, d := clock()
				k := phase.Load()
				local[k].Blocked = max(local[k].Blocked, (w-w0)-(c-c0)-(d-d0))
				w0, c0, d0 = w, c, d
			}
			rng ^= rng << 13
			rng ^= rng >> 7
			rng ^= rng << 17
			off := base + int64(rng%words)*8
			t0 := time.Now()
			*(*uint64)(unsafe.Pointer(&mem[off])) = rng
			local[phase.Load()].add(int64(time.Since(t0)))
			if n&0xffff == 0 {
				flush()
			}
		}
		flush()
	}()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 2 && f[0] == "phase":
			k, _ := strconv.Atoi(f[1])
			phase.Store(int32(min(max(k, 0), len(hs)-1)))
			fmt.Println("ok")
		case len(f) == 2 && f[0] == "report":
			k, _ := strconv.Atoi(f[1])
			k = min(max(k, 0), len(hs)-1)
			mu.Lock()
			b, _ := json.Marshal(hs[k])
			mu.Unlock()
			fmt.Println(string(b))
		case len(f) == 1 && f[0] == "stop":
			stop.Store(true)
			<-done
			fmt.Println("ok")
			return m.Close()
		}
	}
	return in.Err()
}

type kid struct {
	cmd *exec.Cmd
	in  *bufio.Writer
	out *bufio.Scanner
}

func (k *kid) ask(line string) (string, error) {
	fmt.Fprintln(k.in, line)
	if err := k.in.Flush(); err != nil {
		return "", err
	}
	if !k.out.Scan() {
		return "", fmt.Errorf("writer ended: %v", k.out.Err())
	}
	return k.out.Text(), nil
}

// cutLoop runs the cut command n times, one per interval, and returns the
// longest it took.
func cutLoop(cut, uncut func() error) (time.Duration, error) {
	var longest time.Duration
	for i := 0; i < *cuts; i++ {
		next := time.Now().Add(*every)
		t0 := time.Now()
		if err := cut(); err != nil {
			return 0, err
		}
		longest = max(longest, time.Since(t0))
		if uncut != nil {
			if err := uncut(); err != nil {
				return 0, err
			}
		}
		time.Sleep(time.Until(next))
	}
	return longest, nil
}

func shell(cmd string, i *int) func() error {
	if cmd == "" {
		return nil
	}
	return func() error {
		c := exec.Command("sh", "-c", cmd)
		c.Env = append(os.Environ(), "CUT="+strconv.Itoa(*i))
		out, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", cmd, err, out)
		}
		return nil
	}
}

func runDAX() error {
	if *socket == "" || *cutCmd == "" {
		return fmt.Errorf("give -socket and -cut (or -redis)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var kids []*kid
	defer func() {
		for _, k := range kids {
			k.cmd.Process.Kill()
			k.cmd.Wait()
		}
	}()
	for i := 0; i < *writers; i++ {
		cmd := exec.Command(self, append([]string{"-child", strconv.Itoa(i)}, os.Args[1:]...)...)
		cmd.Stderr = os.Stderr
		w, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		r, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		k := &kid{cmd: cmd, in: bufio.NewWriter(w), out: bufio.NewScanner(r)}
		k.out.Buffer(make([]byte, 1<<20), 1<<20)
		kids = append(kids, k)
	}
	for i, k := range kids {
		if !k.out.Scan() || k.out.Text() != "ready" {
			return fmt.Errorf("writer %d did not start: %q %v", i, k.out.Text(), k.out.Err())
		}
	}
	var firstLine string
	if *firstCmd != "" {
		h, took, err := stretchOf(kids, 2, shell(*firstCmd, new(int)))
		if err != nil {
			return err
		}
		firstLine = h.line("first", took)
	}
	time.Sleep(*quiet)
	if err := setPhase(kids, 1); err != nil {
		return err
	}
	n := 0
	cut, uncut := shell(*cutCmd, &n), shell(*uncutCmd, &n)
	var holds [2]*holdLog
	if *metrics != "" {
		holds[0], holds[1] = &holdLog{}, &holdLog{}
		cut = holds[0].around(cut)
		if uncut != nil {
			uncut = holds[1].around(uncut)
		}
	}
	cutMax, err := cutLoop(cut, uncut)
	if err != nil {
		return err
	}
	var all [2]hist
	for p := range all {
		if all[p], err = collect(kids, p); err != nil {
			return err
		}
	}
	for _, k := range kids {
		k.ask("stop")
	}
	if firstLine != "" {
		fmt.Println(firstLine)
	}
	fmt.Println(all[0].line("quiet", 0))
	fmt.Println(all[1].line("cuts", cutMax))
	if holds[0] != nil {
		fmt.Printf("daemon cut %s uncut %s\n", holds[0], holds[1])
	}
	return nil
}

// stretchOf runs cmd once with the writers' stores counted in phase p,
// then puts them back in phase 0, and returns their stores meanwhile and
// how long cmd took.
func stretchOf(kids []*kid, p int, cmd func() error) (hist, time.Duration, error) {
	if err := setPhase(kids, p); err != nil {
		return hist{}, 0, err
	}
	t0 := time.Now()
	if err := cmd(); err != nil {
		return hist{}, 0, err
	}
	took := time.Since(t0)
	if err := setPhase(kids, 0); err != nil {
		return hist{}, 0, err
	}
	time.Sleep(100 * time.Millisecond) // each writer's last stores of phase p reach its histogram
	h, err := collect(kids, p)
	return h, took, err
}

// setPhase makes every writer record its stores in phase p.
func setPhase(kids []*kid, p int) error {
	for _, k := range kids {
		if _, err := k.ask(fmt.Sprintf("phase %d", p)); err != nil {
			return err
		}
	}
	return nil
}

// collect merges the writers' histograms of phase p.
func collect(kids []*kid, p int) (hist, error) {
	var all hist
	for i, k := range kids {
		ans, err := k.ask(fmt.Sprintf("report %d", p))
		if err != nil {
			return all, err
		}
		var h hist
		if err := json.Unmarshal([]byte(ans), &h); err != nil {
			return all, fmt.Errorf("writer %d: %v", i, err)
		}
		all.merge(&h)
	}
	return all, nil
}

// holdLog is the daemon's own account of each run of a command that cuts
// (the deltas of its /metrics over the command): the cuts' held phases
// and their holds to the end, in nanoseconds.
type holdLog struct{ phase, hold []int64 }

// The series holdLog reads, in seconds.
const (
	phaseSeries = "daxsnap_dax_cut_hold_phase_seconds_total"
	holdSeries  = "daxsnap_dax_cut_hold_seconds_total"
)

func (l *holdLog) around(run func() error) func() error {
	return func() error {
		before, err := scrape()
		if err != nil {
			return err
		}
		if err := run(); err != nil {
			return err
		}
		after, err := scrape()
		if err != nil {
			return err
		}
		l.phase = append(l.phase, int64((after[phaseSeries]-before[phaseSeries])*1e9))
		l.hold = append(l.hold, int64((after[holdSeries]-before[holdSeries])*1e9))
		return nil
	}
}

// String is "hold-phase-p50 P hold-phase-max M hold-p50 P hold-max M"
// (nanoseconds), or "none" for a command never run.
func (l *holdLog) String() string {
	if len(l.hold) == 0 {
		return "none"
	}
	mid := func(v []int64) (int64, int64) {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[(len(v)-1)/2], v[len(v)-1]
	}
	pm, px := mid(l.phase)
	hm, hx := mid(l.hold)
	return fmt.Sprintf("hold-phase-p50 %d hold-phase-max %d hold-p50 %d hold-max %d", pm, px, hm, hx)
}

// scrape reads the daemon's counters of the cuts' holds.
func scrape() (map[string]float64, error) {
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", *metrics)
	}}}
	resp, err := c.Get("http://daxsnap/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape the daemon's metrics: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == phaseSeries || f[0] == holdSeries) {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return nil, fmt.Errorf("metric %s: %w", f[0], err)
			}
			out[f[0]] = v
		}
	}
	return out, sc.Err()
}

// runRedis: one client SETs in a loop, timed; after the quiet stretch,
// BGSAVE every interval (the next once the last has finished).
func runRedis() error {
	conn, err := net.Dial("tcp", *redis)
	if err != nil {
		return err
	}
	defer conn.Close()
	cmd := resp(conn)
	ctl, err := net.Dial("tcp", *redis)
	if err != nil {
		return err
	}
	defer ctl.Close()
	ctlCmd := resp(ctl)
	var phase atomic.Int32
	var stop atomic.Bool
	var hs [2]hist
	var loopErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		val := strings.Repeat("x", 64)
		for i := 0; !stop.Load(); i++ {
			k := "key:" + strconv.Itoa(rand.IntN(*keys))
			t0 := time.Now()
			if _, err := cmd("SET", k, val); err != nil {
				loopErr = err
				return
			}
			hs[phase.Load()].add(int64(time.Since(t0)))
		}
	}()
	var peak atomic.Int64
	sampling := make(chan struct{})
	go func() {
		for {
			select {
			case <-sampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if *redisPID > 0 {
				storeMax(&peak, pssTree(*redisPID))
			}
		}
	}()
	time.Sleep(*quiet)
	phase.Store(1)
	var forkMax int64
	save := func() error {
		if _, err := ctlCmd("BGSAVE"); err != nil {
			return err
		}
		for {
			info, err := ctlCmd("INFO", "persistence")
			if err != nil {
				return err
			}
			if strings.Contains(info, "rdb_bgsave_in_progress:0") {
				if info, err = ctlCmd("INFO", "stats"); err != nil {
					return err
				}
				for _, l := range strings.Split(info, "\r\n") {
					if v, ok := strings.CutPrefix(l, "latest_fork_usec:"); ok {
						n, _ := strconv.ParseInt(v, 10, 64)
						forkMax = max(forkMax, n)
					}
				}
				return nil
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	cutMax, err := cutLoop(save, nil)
	stop.Store(true)
	<-done
	close(sampling)
	if err != nil {
		return err
	}
	if loopErr != nil {
		return loopErr
	}
	fmt.Println(hs[0].line("quiet", 0))
	fmt.Println(hs[1].line("cuts", cutMax))
	fmt.Printf("redis fork-usec-max %d pss-peak-bytes %d\n", forkMax, peak.Load())
	return nil
}

func storeMax(v *atomic.Int64, d int64) {
	for {
		old := v.Load()
		if d <= old || v.CompareAndSwap(old, d) {
			return
		}
	}
}

// pssTree is the PSS of pid and its children (a forked BGSAVE), bytes.
func pssTree(pid int) int64 {
	total := pss(pid)
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(kids)) {
		if k, err := strconv.Atoi(f); err == nil {
			total += pss(k)
		}
	}
	return total
}

func pss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Pss:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}

// resp returns a function that sends a command on conn and reads its
// reply.
func resp(conn net.Conn) func(args ...string) (string, error) {
	rd := bufio.NewReader(conn)
	return func(args ...string) (string, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := conn.Write([]byte(b.String())); err != nil {
			return "", err
		}
		return readReply(rd)
	}
}

// readReply reads one RESP reply as text.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
