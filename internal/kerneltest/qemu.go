package kerneltest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/testutil"
)

// DefaultTimeout bounds one boot, from starting qemu to its exit.
const DefaultTimeout = 150 * time.Second

// BaseModules are loaded in every boot: virtio disks and the device mapper
// with its snapshot targets.
var BaseModules = []string{"virtio_pci", "virtio_blk", "dm_mod", "dm_snapshot"}

// NVDIMMModules are loaded when Options.NVDIMM is set: the ACPI NFIT bus
// and the pmem block driver, which make the emulated NVDIMM /dev/pmem0.
var NVDIMMModules = []string{"nfit", "nd_pmem"}

// Options describe one boot.
type Options struct {
	// Disks are raw image files, attached as virtio disks /dev/vda,
	// /dev/vdb, ... in this order. The guest's writes land in them.
	Disks []string
	// Script is the sh script the guest runs (busybox sh; dmsetup is on
	// PATH). Its stdout and stderr are Result.Output; its exit status is
	// Result.ExitCode.
	Script string
	// Modules are loaded after BaseModules (and NVDIMMModules), with their
	// dependencies, in order.
	Modules []string
	// NVDIMM, if set, is the file backing an emulated NVDIMM (qemu creates
	// it); the guest sees it as /dev/pmem0.
	NVDIMM string
	// NVDIMMSize is the NVDIMM's size; 0 means 256 MiB.
	NVDIMMSize int64
	// Timeout bounds the boot; 0 means DefaultTimeout (or
	// DAXSNAP_KERNELTEST_TIMEOUT).
	Timeout time.Duration
}

// Result is what a boot produced.
type Result struct {
	// Output is what the script printed, "\r" removed.
	Output string
	// ExitCode is the script's exit status.
	ExitCode int
	// Console is the whole serial console, firmware and kernel included.
	Console string
	// Accel is the accelerator used: "kvm" or "tcg".
	Accel string
	// Elapsed is the wall time from starting qemu to its exit.
	Elapsed time.Duration
	// ToScript is the wall time from starting qemu until the guest's init
	// began the script: firmware, kernel boot, module loading and device
	// probing.
	ToScript time.Duration
}

// consoleWriter collects the console and notes when the begin marker
// first appears.
type consoleWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	start time.Time
	seen  time.Duration
}

func (w *consoleWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	from := max(w.buf.Len()-len(beginMarker), 0)
	w.buf.Write(p)
	if w.seen == 0 && bytes.Contains(w.buf.Bytes()[from:], []byte(beginMarker)) {
		w.seen = time.Since(w.start)
	}
	return len(p), nil
}

// Require returns the kernel to boot, or skips the test (fails it when
// DAXSNAP_STRICT=1) with the reason it cannot run: qemu, busybox-static,
// dmsetup or the Debian kernel missing.
func Require(t testing.TB) Kernel {
	t.Helper()
	testutil.RequireTool(t, "qemu-system-x86_64", "dmsetup")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testutil.Skip(t, "/bin/busybox is not installed: apt-get install busybox-static (.ci/run does)")
	}
	k, err := FindKernel()
	if err != nil {
		testutil.Skip(t, err.Error())
	}
	return k
}

// Boot boots the kernel k with the options' disks and script and returns
// what the guest printed. It fails the test if qemu cannot start, the boot
// times out, or the guest's init never reaches the end of the script; the
// caller checks ExitCode and Output. qemu is killed when the test ends.
func Boot(t testing.TB, k Kernel, opts Options) Result {
	t.Helper()
	dir := t.TempDir()
	if len(opts.Disks) > 26 {
		t.Fatalf("%d disks: at most 26 (/dev/vda../dev/vdz)", len(opts.Disks))
	}
	modules := slices.Clone(BaseModules)
	var waitFor []string
	for i := range opts.Disks {
		waitFor = append(waitFor, "/dev/vd"+string(rune('a'+i)))
	}
	if opts.NVDIMM != "" {
		modules = append(modules, NVDIMMModules...)
		waitFor = append(waitFor, "/dev/pmem0")
	}
	modules = append(modules, opts.Modules...)
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := buildInitramfs(initrd, k, modules, waitFor, opts.Script); err != nil {
		t.Fatalf("build initramfs: %v", err)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
		if s := os.Getenv("DAXSNAP_KERNELTEST_TIMEOUT"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				t.Fatalf("DAXSNAP_KERNELTEST_TIMEOUT=%q: %v", s, err)
			}
			timeout = d
		}
	}
	accel := chooseAccel()
	r, err := run(t, k, initrd, opts, accel, timeout)
	if err != nil && accel == "kvm" && !strings.Contains(r.Console, beginMarker) && os.Getenv("DAXSNAP_KERNELTEST_ACCEL") == "" {
		t.Logf("KVM boot failed before the guest's init ran (%v); retrying under TCG, and using TCG from now on", err)
		kvmBroken.Store(true)
		r, err = run(t, k, initrd, opts, "tcg", timeout)
	}
	if err != nil {
		t.Fatalf("boot %s (%s): %v\nconsole:\n%s", k.Image, r.Accel, err, tail(r.Console, 6000))
	}
	t.Logf("booted %s under %s: script started after %v, qemu exited after %v",
		k.Version, r.Accel, r.ToScript.Round(time.Millisecond), r.Elapsed.Round(time.Millisecond))
	return r
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

var (
	kvmOnce   sync.Once
	kvmOK     bool
	kvmBroken atomic.Bool
)

// chooseAccel picks kvm when /dev/kvm opens read-write and the CPU has
// hardware virtualisation (vmx or svm: a /dev/kvm without them, as a
// paravirtual KVM in a nested VM, cannot run an ordinary kernel), else tcg.
func chooseAccel() string {
	switch a := os.Getenv("DAXSNAP_KERNELTEST_ACCEL"); a {
	case "kvm", "tcg":
		return a
	}
	kvmOnce.Do(func() {
		f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
		if err != nil {
			return
		}
		f.Close()
		cpu, err := os.ReadFile("/proc/cpuinfo")
		if err != nil {
			return
		}
		for _, l := range strings.Split(string(cpu), "\n") {
			if strings.HasPrefix(l, "flags") {
				fl := " " + l + " "
				kvmOK = strings.Contains(fl, " vmx ") || strings.Contains(fl, " svm ")
				return
			}
		}
	})
	if kvmOK && !kvmBroken.Load() {
		return "kvm"
	}
	return "tcg"
}

func qemuArgs(k Kernel, initrd string, opts Options, accel string) []string {
	machine, mem := "q35", "512M"
	if opts.NVDIMM != "" {
		machine, mem = "q35,nvdimm=on", "512M,slots=2,maxmem=2G"
	}
	args := []string{
		"-machine", machine, "-accel", accel, "-smp", "1", "-m", mem,
		"-nographic", "-no-reboot", "-nic", "none",
		"-kernel", k.Image, "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1",
	}
	if accel == "kvm" {
		args = append(args, "-cpu", "host")
	}
	for _, d := range opts.Disks {
		args = append(args, "-drive", "file="+strings.ReplaceAll(d, ",", ",,")+",format=raw,if=virtio,cache=unsafe")
	}
	if opts.NVDIMM != "" {
		size := opts.NVDIMMSize
		if size == 0 {
			size = 256 << 20
		}
		args = append(args,
			"-object", fmt.Sprintf("memory-backend-file,id=mem1,share=on,mem-path=%s,size=%d", strings.ReplaceAll(opts.NVDIMM, ",", ",,"), size),
			"-device", "nvdimm,memdev=mem1,id=nv1")
	}
	return args
}

func run(t testing.TB, k Kernel, initrd string, opts Options, accel string, timeout time.Duration) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	console := &consoleWriter{start: start}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", qemuArgs(k, initrd, opts, accel)...)
	cmd.Stdout, cmd.Stderr = console, console
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return Result{Accel: accel}, err
	}
	// If the test ends (t.Fatal in another goroutine's test, a panic) while
	// qemu runs, kill it.
	t.Cleanup(func() {
		if cmd.ProcessState == nil && cmd.Process != nil {
			cmd.Process.Kill()
		}
	})
	werr := cmd.Wait()
	r := Result{Accel: accel, Elapsed: time.Since(start)}
	console.mu.Lock()
	r.Console = strings.ReplaceAll(console.buf.String(), "\r", "")
	r.ToScript = console.seen
	console.mu.Unlock()
	if ctx.Err() != nil {
		return r, fmt.Errorf("timed out after %v", timeout)
	}
	b := strings.Index(r.Console, beginMarker+"\n")
	if b < 0 {
		return r, fmt.Errorf("the guest's init did not start the scenario (qemu: %v)", werr)
	}
	rest := r.Console[b+len(beginMarker)+1:]
	e := strings.LastIndex(rest, endMarker)
	if e < 0 {
		return r, fmt.Errorf("the scenario did not finish (qemu: %v)", werr)
	}
	r.Output = rest[:e]
	code, _, _ := strings.Cut(rest[e+len(endMarker):], "@@")
	n, err := strconv.Atoi(code)
	if err != nil {
		return r, fmt.Errorf("bad end marker %q", rest[e:])
	}
	r.ExitCode = n
	if werr != nil {
		return r, fmt.Errorf("qemu: %w", werr)
	}
	return r, nil
}
