//go:build !race

package backing_test

import (
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/backing"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/uffd"
)

// Ensure that ReadFileAt of a tmpfs file is a raw system call, outside
// the Go runtime's system call state: entering that state woke the
// runtime's sysmon whenever every P was idle (an NBD reader between
// bursts), 6-10 % of the daemon on first writes after a snapshot. The
// read is held up in the kernel (its buffer is write-protected with
// userfaultfd) while the runtime counts the goroutines not in Go: a
// goroutine in a system call the runtime knows of is one of them. Under
// the race detector the calls go through package unix on purpose.
func TestMemory_fileIORawSystemCall(t *testing.T) {
	testutil.RequireRoot(t) // the kernel's own faults reach a privileged userfaultfd only
	defer runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0)))
	// A raw system call holds its P: a stop of the world (a GC) would
	// wait for it, and the read waits for this goroutine.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))

	_, file, dev := openTmpfs(t, 1<<20)
	page := os.Getpagesize()
	buf, err := unix.Mmap(-1, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	buf[0] = 1 // present, so that write-protection applies
	fd, err := uffd.New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if fd.UserModeOnly() {
		t.Fatal("no userfaultfd for faults taken in the kernel, even as root")
	}
	if _, err := fd.API(uffd.FeaturePagefaultFlagWP, 0); err != nil {
		t.Fatal(err)
	}
	addr := uintptr(unsafe.Pointer(&buf[0]))
	if err := fd.Register(addr, uintptr(page), uffd.ModeWP); err != nil {
		t.Fatal(err)
	}
	if err := fd.Protect(addr, uintptr(page)); err != nil {
		t.Fatal(err)
	}

	sample := []metrics.Sample{{Name: "/sched/goroutines/not-in-go:goroutines"}}
	notInGo := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	before := notInGo()
	done := make(chan error, 1)
	go func() {
		_, err := dev.(backing.FileReader).ReadFileAt(buf, 5*int64(page))
		done <- err
	}()
	msgs := make([]uffd.Msg, 1)
	for n := 0; n == 0; {
		if ok, err := fd.Poll(10 * time.Second); err != nil || !ok {
			t.Fatalf("the read took no write-protect fault on its buffer (%v)", err)
		}
		if n, err = fd.ReadEvents(msgs); err != nil {
			t.Fatal(err)
		}
	}
	during := notInGo()
	if err := fd.Unprotect(addr, uintptr(page)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, file[5*page:6*page]) {
		t.Error("ReadFileAt did not read the file's bytes")
	}
	if during != before {
		t.Errorf("goroutines not in Go: %d before the read, %d while it waited in the kernel: ReadFileAt entered the runtime's system call state", before, during)
	}
}
