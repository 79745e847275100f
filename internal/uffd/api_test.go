package uffd_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/uffd"
)

func TestFeature_String(t *testing.T) {
	for _, tc := range []struct {
		f    uffd.Feature
		want string
	}{
		{0, "none"},
		{uffd.FeaturePagefaultFlagWP, "PAGEFAULT_FLAG_WP"},
		{wpShmem | uffd.FeatureEventUnmap, "PAGEFAULT_FLAG_WP|EVENT_UNMAP|WP_HUGETLBFS_SHMEM"},
		{uffd.FeatureMove | 1<<40, "MOVE|0x10000000000"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("Feature(%#x).String() = %q, want %q", uint64(tc.f), got, tc.want)
		}
	}
}

func TestFeatureError_Message(t *testing.T) {
	for _, tc := range []struct {
		err  uffd.FeatureError
		want []string
	}{
		{uffd.FeatureError{Missing: uffd.FeatureWPHugetlbfsShmem, Available: uffd.FeaturePagefaultFlagWP, Kernel: "5.15.0"},
			[]string{"userfaultfd: write-protect of shmem and hugetlbfs needs Linux 5.19+ (UFFD_FEATURE_WP_HUGETLBFS_SHMEM)",
				"this kernel (5.15.0) offers features 0x1 (PAGEFAULT_FLAG_WP)", "run a newer kernel"}},
		{uffd.FeatureError{Missing: uffd.FeatureWPUnpopulated | 1<<40},
			[]string{"never-touched anonymous pages needs Linux 6.4+ (UFFD_FEATURE_WP_UNPOPULATED); feature bit 40 is unknown",
				"this kernel offers features 0x0 (none)"}},
	} {
		msg := tc.err.Error()
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("message %q lacks %q", msg, w)
			}
		}
		if !errors.Is(&tc.err, uffd.ErrUnsupported) {
			t.Errorf("%q does not wrap ErrUnsupported", msg)
		}
	}
}

// The handshake enables what was asked, refuses what the kernel lacks, and
// cannot be repeated; an adopted descriptor reports its creator's features.
func TestAPI(t *testing.T) {
	avail, err := uffd.Available()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this kernel offers %v", avail)
	if avail&wpShmem != wpShmem {
		testutil.Skip(t, (&uffd.FeatureError{Missing: wpShmem &^ avail, Available: avail}).Error())
	}

	fd, err := uffd.New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	var msgs [1]uffd.Msg
	for _, block := range []uffd.Block{uffd.BlockPoll, uffd.BlockNetpoll} {
		if _, err := fd.Wait(msgs[:], 0, block); err == nil || !strings.Contains(err.Error(), "handshake") {
			t.Fatalf("Wait(%d) before the handshake: %v, want an error saying to do the handshake first", block, err)
		}
	}
	_, err = fd.API(wpShmem|1<<40, 0)
	var fe *uffd.FeatureError
	if !errors.As(err, &fe) || fe.Missing != 1<<40 || fe.Available != avail {
		t.Fatalf("API requiring feature bit 40: %v, want a FeatureError naming only that bit", err)
	}
	optional := uffd.FeatureThreadID | uffd.FeatureEventUnmap | 1<<41
	got, err := fd.API(wpShmem, optional)
	if err != nil {
		t.Fatalf("API after a refused API: %v", err)
	}
	if want := wpShmem | optional&avail; got != want || fd.Features() != want {
		t.Fatalf("API enabled %v (Features() %v), want %v", got, fd.Features(), want)
	}
	if _, err := fd.API(wpShmem, 0); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "already") {
		t.Fatalf("a second API: %v, want EINVAL saying the handshake was done", err)
	}

	var dup int
	if err := fd.Control(func(raw int) { dup, err = unix.Dup(raw) }); err != nil || dup < 0 {
		t.Fatal(err)
	}
	adopted, err := uffd.FromFD(dup)
	if err != nil {
		t.Fatal(err)
	}
	defer adopted.Close()
	if adopted.Features() != got {
		t.Fatalf("adopted descriptor reports features %v, want %v (from /proc/self/fdinfo)", adopted.Features(), got)
	}

	if err := fd.Control(func(raw int) { dup, err = unix.Dup(raw) }); err != nil || dup < 0 {
		t.Fatal(err)
	}
	file := os.NewFile(uintptr(dup), "received")
	fromFile, err := uffd.FromFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fromFile.Close()
	if fromFile.Features() != got {
		t.Fatalf("FromFile: features %v, want %v", fromFile.Features(), got)
	}
	if file.Fd() != ^uintptr(0) {
		t.Error("FromFile did not close the *os.File it adopted")
	}
}

func TestFromFD_NotUserfaultfd(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	_, err := uffd.FromFD(p[0])
	if err == nil || !strings.Contains(err.Error(), "not a userfaultfd") {
		t.Fatalf("FromFD(pipe): %v, want an error saying it is not a userfaultfd", err)
	}
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_GETFD, 0); err != unix.EBADF {
		t.Fatalf("FromFD did not close the descriptor it refused: F_GETFD %v", err)
	}
}

// Register refuses what the kernel cannot register, with errors that say why.
func TestRegister_Errors(t *testing.T) {
	testutil.RequireRoot(t)
	shm := shmFile(t, 4*pageSize)
	mem := mapShared(t, shm, 4*pageSize)
	defer unix.Munmap(mem)

	raw, err := uffd.New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.Register(addrOf(mem), uintptr(len(mem)), uffd.ModeWP); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Register before API: %v, want EINVAL", err)
	}

	fd := newFD(t, 0, wpShmem, 0)
	disk, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(disk.Fd()), &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Type != unix.TMPFS_MAGIC {
		if err := disk.Truncate(int64(pageSize)); err != nil {
			t.Fatal(err)
		}
		dm := mapShared(t, disk, pageSize)
		defer unix.Munmap(dm)
		err := fd.Register(addrOf(dm), uintptr(pageSize), uffd.ModeWP)
		if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "regular files cannot be registered") {
			t.Errorf("Register of a file on a disk file system: %v, want EINVAL saying such files cannot be registered", err)
		}
	}
	if err := fd.Register(addrOf(mem)+1, uintptr(pageSize), uffd.ModeWP); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Register of an unaligned range: %v, want EINVAL", err)
	}
	hole, err := unix.Mmap(-1, 0, pageSize, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(hole); err != nil {
		t.Fatal(err)
	}
	if err := fd.Register(addrOf(hole), uintptr(pageSize), uffd.ModeWP); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Register of unmapped memory: %v, want EINVAL", err)
	}
	if err := fd.Protect(addrOf(mem), uintptr(pageSize)); !errors.Is(err, uffd.ErrNotRegistered) {
		t.Errorf("Protect of an unregistered range: %v, want ErrNotRegistered", err)
	}
	if err := fd.Register(addrOf(mem), uintptr(len(mem)), uffd.ModeWP); err != nil {
		t.Fatal(err)
	}
	other := newFD(t, 0, wpShmem, 0)
	if err := other.Register(addrOf(mem), uintptr(len(mem)), uffd.ModeWP); !errors.Is(err, unix.EBUSY) {
		t.Errorf("Register with a second userfaultfd: %v, want EBUSY", err)
	}
	if err := fd.Unregister(addrOf(mem), uintptr(len(mem))); err != nil {
		t.Fatal(err)
	}
	if err := fd.Protect(addrOf(mem), uintptr(pageSize)); !errors.Is(err, uffd.ErrNotRegistered) {
		t.Errorf("Protect after Unregister: %v, want ErrNotRegistered", err)
	}
}

// /dev/userfaultfd gives the same kind of userfaultfd as the system call.
func TestDevUserfaultfd(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := os.Stat("/dev/userfaultfd"); err != nil {
		testutil.Skip(t, "no /dev/userfaultfd (Linux 6.1+ with CONFIG_USERFAULTFD creates it)")
	}
	raw, err := uffd.DevCreate(uffd.CreateFlags)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := uffd.FromFD(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if _, err := fd.API(wpShmem, 0); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, file: shmFile(t, pageSize), fd: fd}
	f.client = mapShared(t, f.file, pageSize)
	f.unmapLater(f.client)
	if err := fd.Register(addrOf(f.client), uintptr(pageSize), uffd.ModeWP); err != nil {
		t.Fatal(err)
	}
	f.protect(0, pageSize)
	s := f.store(f.client, 0, 1)
	expectFault(t, fd, f.pageAddr(0))
	f.unprotect(0, pageSize)
	s.wait(t, "after Unprotect")
}

// Poll and Wait see pending faults, time out, and return ErrClosed when the
// FD is closed under them.
func TestPollWaitClose(t *testing.T) {
	f := shmFixture(t, 2, wpShmem, 0)
	if ready, err := f.fd.Poll(10 * time.Millisecond); ready || err != nil {
		t.Fatalf("Poll with nothing pending: %v, %v", ready, err)
	}
	var buf [8]uffd.Msg
	for _, block := range []uffd.Block{uffd.BlockPoll, uffd.BlockNetpoll} {
		if err := f.fd.SetDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := f.fd.Wait(buf[:], time.Millisecond, block); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Wait(%d) past the deadline: %v, want os.ErrDeadlineExceeded", block, err)
		}
	}
	f.fd.SetDeadline(time.Time{})

	f.protect(0, 2*pageSize)
	s0, s1 := f.store(f.client, 0, 1), f.store(f.client, pageSize, 2)
	if ready, err := f.fd.Poll(waitLimit); !ready || err != nil {
		t.Fatalf("Poll with a fault pending: %v, %v", ready, err)
	}
	seen := map[uintptr]bool{}
	for len(seen) < 2 {
		n, err := f.fd.Wait(buf[:], 50*time.Microsecond, uffd.BlockPoll)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range buf[:n] {
			seen[m.Fault().Addr] = true
		}
	}
	if !seen[f.pageAddr(0)] || !seen[f.pageAddr(1)] {
		t.Fatalf("faults at %v, want pages 0 and 1", seen)
	}
	f.unprotect(0, 2*pageSize)
	s0.wait(t, "after Unprotect")
	s1.wait(t, "after Unprotect")

	errs := make(chan error, 3)
	go func() { _, err := f.fd.Poll(-1); errs <- err }()
	go func() { _, err := f.fd.Wait(make([]uffd.Msg, 1), 0, uffd.BlockPoll); errs <- err }()
	go func() { _, err := f.fd.Wait(make([]uffd.Msg, 1), 0, uffd.BlockNetpoll); errs <- err }()
	time.Sleep(20 * time.Millisecond) // let them block
	if err := f.fd.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		select {
		case err := <-errs:
			if err != uffd.ErrClosed {
				t.Errorf("Poll or Wait when closed: %v, want ErrClosed", err)
			}
		case <-time.After(waitLimit):
			t.Fatal("Close did not wake Poll and both kinds of Wait")
		}
	}
	if err := f.fd.Protect(addrOf(f.client), uintptr(pageSize)); !errors.Is(err, uffd.ErrClosed) {
		t.Errorf("Protect after Close: %v, want ErrClosed", err)
	}
	if _, err := f.fd.ReadEvents(buf[:]); err != uffd.ErrClosed {
		t.Errorf("ReadEvents after Close: %v, want ErrClosed", err)
	}
	if err := f.fd.Close(); err != uffd.ErrClosed {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}
