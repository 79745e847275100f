package backing_test

import (
	"testing"

	"github.com/daxsnap/daxsnap/internal/backing"
)

// Ensure that Flush and FlushRange of volatile memory (a tmpfs file) make
// no msync: tmpfs has no media to write back to (its fsync does nothing),
// and each system call woke the Go runtime's sysmon on every exception
// commit. A memory file on media (fsdax without MAP_SYNC) still msyncs.
func TestMemory_flushVolatile(t *testing.T) {
	calls := backing.CountMsync(t)
	path := tmpfsFile(t, 1<<20)
	dev, err := backing.Open(path, backing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := dev.(backing.DirectAccesser).FlushRange(4096, 8192); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("Flush and FlushRange of a tmpfs file made %d msync calls, want 0", n)
	}
	if err := dev.(backing.DirectAccesser).FlushRange(1<<20-10, 20); err == nil {
		t.Error("FlushRange past the end of a tmpfs file succeeded")
	}
	dev.Close()
	if err := dev.Flush(); err == nil {
		t.Error("Flush of a closed tmpfs file succeeded")
	}

	media, err := backing.OpenMemoryAs(path, backing.KindFSDAX, false, true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer media.Close()
	if err := media.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := media.(backing.DirectAccesser).FlushRange(0, 4096); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("Flush and FlushRange of an fsdax file made %d msync calls, want 2", n)
	}
}
