package daemon_test

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Ensure that devices are exported over NBD on <state>/nbd.sock to real
// clients, that their I/O shows in /metrics and that exports count as
// opens only while connected.
func TestDaemon_nbdExport(t *testing.T) {
	testutil.RequireTool(t, "nbdinfo", "qemu-io", "curl")
	e := newEnv(t)
	path := e.region("r", 4*mib)
	e.create("vol", linear(path, 8192))
	uri := "nbd+unix:///vol?socket=" + filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)

	if out := run(t, "nbdinfo", "--size", uri); strings.TrimSpace(out) != "4194304" {
		t.Fatalf("nbdinfo --size = %q", out)
	}
	list := run(t, "nbdinfo", "--list", "nbd+unix://?socket="+filepath.Join(e.cfg.StateDir, daemon.NBDSocketName))
	if !strings.Contains(list, `export="vol"`) || !strings.Contains(list, "description: daxsnap device vol") {
		t.Fatalf("nbdinfo --list lacks vol:\n%s", list)
	}
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 65536 65536", "-c", "flush", uri)
	got, err := e.c.ReadData(bg, "vol", 65536, 65536)
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, 65536)) {
		t.Fatalf("data written over NBD not on the device: %v", err)
	}
	e.waitOpenCount("vol", 0)

	metrics := run(t, "curl", "-sf", "--unix-socket", e.d.SocketPath(), "http://daxsnap/metrics")
	for _, want := range []string{
		`daxsnap_device_io_requests_total{device="vol",op="write"} 1`,
		`daxsnap_device_io_bytes_total{device="vol",op="write"} 65536`,
		`daxsnap_device_io_duration_seconds_bucket{device="vol",op="write",le="+Inf"} 1`,
		`daxsnap_device_openers{device="vol"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	info := run(t, "curl", "-sf", "--unix-socket", e.d.SocketPath(), "http://daxsnap/v1/devices/vol")
	if !strings.Contains(info, `"name":"vol"`) {
		t.Fatalf("curl info = %s", info)
	}

	// Reads of 64 KiB and more go out from the volume's lent memory.
	e.write("vol", 1<<20, bytes.Repeat([]byte{0xa5}, 1<<20))
	if out := run(t, "qemu-io", "-f", "raw", "-r", "-c", "read -P 0x5a 65536 65536", "-c", "read -P 0xa5 1048576 1048576", uri); strings.Contains(out, "verification failed") {
		t.Fatalf("qemu-io read other data back over NBD:\n%s", out)
	}
}

// Ensure that a read-only device is exported read-only.
func TestDaemon_nbdReadOnly(t *testing.T) {
	testutil.RequireTool(t, "qemu-io")
	e := newEnv(t)
	e.must("create", func() error {
		_, err := e.c.Create(bg, wireCreateRO("ro"))
		return err
	}())
	uri := "nbd+unix:///ro?socket=" + filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 1 0 512", uri).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("write to a read-only export succeeded:\n%s", out)
	}
}

// Ensure that the running daemon answers NBD BLOCK_STATUS with the
// device's real allocation map and advertises FAST_ZERO where zeroing is
// cheap, as a real client (nbdinfo) sees it: a fresh volume is one
// hole, a written range data; the same through an LVM-style origin; a
// zero target is a hole; a snapshot (which copies on write) offers no
// fast zero.
func TestDaemon_nbdBlockStatus(t *testing.T) {
	testutil.RequireTool(t, "nbdinfo")
	e := newEnv(t)
	path := e.region("r", 4*mib)
	e.create("vol", linear(path, 8192))
	e.create("z", "0 8192 zero")
	sock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	uri := func(name string) string { return "nbd+unix:///" + name + "?socket=" + sock }
	wantMap := func(name, want string) {
		t.Helper()
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(run(t, "nbdinfo", "--map", uri(name))), "\n") {
			got = append(got, strings.Join(strings.Fields(line), " "))
		}
		if strings.Join(got, "\n") != want {
			t.Fatalf("nbdinfo --map %s:\n%s\nwant:\n%s", name, strings.Join(got, "\n"), want)
		}
	}
	wantFastZero := func(name string, want bool) {
		t.Helper()
		// --no-content: probing reads the first pages, which allocates them on tmpfs
		info := run(t, "nbdinfo", "--no-content", uri(name))
		if line := fmt.Sprintf("can_fast_zero: %v", want); !strings.Contains(info, line) {
			t.Fatalf("nbdinfo %s lacks %q:\n%s", name, line, info)
		}
	}

	wantMap("vol", "0 4194304 3 hole,zero")
	wantMap("z", "0 4194304 3 hole,zero")
	wantFastZero("vol", true)
	wantFastZero("z", true)
	e.write("vol", 1048576, bytes.Repeat([]byte{0x5a}, 65536))
	wantMap("vol", "0 1048576 3 hole,zero\n1048576 65536 0 data\n1114112 3080192 3 hole,zero")

	e.snap("vol", "s1") // vol: snapshot-origin over /dev/mapper/vol-real
	wantMap("vol", "0 1048576 3 hole,zero\n1048576 65536 0 data\n1114112 3080192 3 hole,zero")
	wantFastZero("vol", true)
	wantFastZero("s1", false)
}
