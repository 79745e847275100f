package nbd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/testutil"
)

// Real clients (libnbd's nbdinfo and nbdcopy, qemu-img, fio) against the
// server on TCP and on a unix socket, like nbdkit's tests/*.sh.

// runTool runs a command and fails the test with its output if it fails.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := tryTool(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func tryTool(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// toolRig serves "disk" (16 MiB, read-write) and "ro" (read-only, same data).
func toolRig(t *testing.T) (*testServer, *memBackend) {
	t.Helper()
	m := newMem(16 << 20)
	exp := newExports().
		add(Export{Name: "disk", Description: "daxsnap test disk", Backend: m}).
		add(Export{Name: "ro", Description: "read-only view", Backend: m, ReadOnly: true})
	return startServer(t, exp, Options{}), m
}

// sparseImage writes a 16 MiB raw file with data at a few places and
// holes elsewhere; it returns the path and the data ranges.
func sparseImage(t *testing.T) (string, [][2]int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(16 << 20); err != nil {
		t.Fatal(err)
	}
	ranges := [][2]int64{{1 << 20, 64 << 10}, {5 << 20, 1 << 20}, {16<<20 - 4096, 4096}}
	for i, r := range ranges {
		if _, err := f.WriteAt(pattern(int(r[1]), uint64(i+1)), r[0]); err != nil {
			t.Fatal(err)
		}
	}
	return path, ranges
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestTools_nbdinfo(t *testing.T) {
	testutil.RequireTool(t, "nbdinfo")
	ts, _ := toolRig(t)
	list := runTool(t, "nbdinfo", "--list", ts.uri(""))
	for _, want := range []string{`export="disk"`, "daxsnap test disk", `export="ro"`, "read-only view"} {
		if !strings.Contains(list, want) {
			t.Fatalf("nbdinfo --list lacks %q:\n%s", want, list)
		}
	}
	for _, uri := range []string{ts.uri("disk"), ts.unixURI("disk"), ts.uri("ro")} {
		var info struct {
			Structured bool `json:"structured"`
			Exports    []struct {
				Size      int64    `json:"export-size"`
				RO        bool     `json:"is_read_only"`
				Flush     bool     `json:"can_flush"`
				FUA       bool     `json:"can_fua"`
				Trim      bool     `json:"can_trim"`
				Zero      bool     `json:"can_zero"`
				FastZero  bool     `json:"can_fast_zero"`
				MultiConn bool     `json:"can_multi_conn"`
				DF        bool     `json:"can_df"`
				Cache     bool     `json:"can_cache"`
				Min       int      `json:"block_size_minimum"`
				Pref      int      `json:"block_size_preferred"`
				Max       int      `json:"block_size_maximum"`
				Contexts  []string `json:"contexts"`
			} `json:"exports"`
		}
		out := runTool(t, "nbdinfo", "--json", uri)
		if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
			t.Fatalf("nbdinfo --json %s: %v\n%s", uri, err, out)
		}
		e := info.Exports[0]
		ro := strings.HasSuffix(uri, "/ro")
		if !info.Structured || e.Size != 16<<20 || e.RO != ro || !e.Flush || !e.FUA || !e.MultiConn || !e.DF || !e.Cache ||
			e.Trim == ro || e.Zero == ro || e.FastZero == ro || e.Min != 512 || e.Pref != 4096 || e.Max != 32<<20 ||
			len(e.Contexts) != 1 || e.Contexts[0] != baseAllocationName {
			t.Fatalf("nbdinfo %s:\n%s", uri, out)
		}
	}
	// An unknown export is an error, with the server's message.
	if out, err := tryTool("nbdinfo", ts.uri("nonesuch")); err == nil || !strings.Contains(out, "nonesuch") {
		t.Fatalf("nbdinfo of an unknown export: err %v\n%s", err, out)
	}
}

func TestTools_qemuImg(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	ts, m := toolRig(t)
	src, ranges := sparseImage(t)

	out := runTool(t, "qemu-img", "info", "--output=json", ts.uri("disk"))
	var info struct {
		Size int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Size != 16<<20 {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}

	m.WriteAt(bytes.Repeat([]byte{0xee}, 16<<20), 0) // stale data the copy must replace
	runTool(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, ts.unixURI("disk"))
	runTool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, ts.uri("disk"))

	dst := filepath.Join(t.TempDir(), "out.img")
	runTool(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", ts.uri("disk"), dst)
	if fileSum(t, src) != fileSum(t, dst) {
		t.Fatal("qemu-img convert out of the export differs from the source")
	}

	// base:allocation: the copy punched holes where the source has them.
	var mapped []struct {
		Start, Length int64
		Data, Zero    bool
	}
	out = runTool(t, "qemu-img", "map", "--output=json", ts.uri("disk"))
	if err := json.Unmarshal([]byte(out), &mapped); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var data [][2]int64
	for _, e := range mapped {
		if e.Data {
			data = append(data, [2]int64{e.Start, e.Length})
		} else if !e.Zero {
			t.Fatalf("qemu-img map: extent %+v is neither data nor zero", e)
		}
	}
	if !equalRanges(data, ranges) {
		t.Fatalf("qemu-img map data extents %v, want %v:\n%s", data, ranges, out)
	}
}

func equalRanges(a, b [][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTools_nbdcopy(t *testing.T) {
	testutil.RequireTool(t, "nbdcopy", "nbdinfo")
	ts, _ := toolRig(t)
	src, _ := sparseImage(t)
	// nbdcopy opens several connections (CAN_MULTI_CONN) and many requests.
	runTool(t, "nbdcopy", "--flush", src, ts.uri("disk"))
	dst := filepath.Join(t.TempDir(), "out.img")
	runTool(t, "nbdcopy", ts.unixURI("disk"), dst)
	if fileSum(t, src) != fileSum(t, dst) {
		t.Fatal("nbdcopy round trip changed the data")
	}
	m := runTool(t, "nbdinfo", "--map", ts.uri("disk"))
	if !strings.Contains(m, "hole,zero") || !strings.Contains(m, "data") {
		t.Fatalf("nbdinfo --map after a sparse copy shows no holes:\n%s", m)
	}
	// The read-only export is announced as such (the wire-level EPERM
	// is TestTransmit_readOnly's: libnbd refuses before sending).
	if out, err := tryTool("nbdcopy", src, ts.uri("ro")); err == nil || !strings.Contains(out, "read-only") {
		t.Fatalf("nbdcopy into a read-only export: err %v\n%s", err, out)
	}
}

func TestTools_fio(t *testing.T) {
	testutil.RequireTool(t, "fio")
	if out, _ := tryTool("fio", "--enghelp=nbd"); !strings.Contains(out, "uri") {
		testutil.Skip(t, "this fio has no nbd ioengine (Debian's fio links libnbd): "+out)
	}
	ts, _ := toolRig(t)
	for _, job := range []struct{ uri, bs string }{
		{ts.uri("disk"), "4k"},     // served on the reader goroutine
		{ts.unixURI("disk"), "1m"}, // served by workers
	} {
		out := runTool(t, "fio", "--name=verify", "--ioengine=nbd", "--uri="+job.uri,
			"--rw=randwrite", "--bs="+job.bs, "--size=16m", "--iodepth=16",
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--output-format=json")
		j := testutil.FIOResult(t, out)
		if j.Error != 0 || j.Write.Bytes != 16<<20 || j.Read.Bytes != 16<<20 {
			t.Fatalf("fio bs=%s: error %d, wrote %d, verified %d bytes, want 16 MiB each", job.bs, j.Error, j.Write.Bytes, j.Read.Bytes)
		}
	}
}

func TestTools_qemuIO(t *testing.T) {
	testutil.RequireTool(t, "qemu-io")
	ts, m := toolRig(t)
	// Writes with FUA, zeroes, discard and a flush, through qemu's client.
	runTool(t, "qemu-io", "-f", "raw",
		"-c", "write -P 0xab 1M 64k",
		"-c", "write -f -P 0xcd 2M 4k",
		"-c", "write -z 1M 4k",
		"-c", "discard 3M 64k",
		"-c", "flush",
		ts.unixURI("disk"))
	want := append(make([]byte, 4096), bytes.Repeat([]byte{0xab}, 60<<10)...)
	if !bytes.Equal(m.bytes(1<<20, 64<<10), want) || !bytes.Equal(m.bytes(2<<20, 4096), bytes.Repeat([]byte{0xcd}, 4096)) {
		t.Fatal("qemu-io writes did not land in the backend as written")
	}
	out := runTool(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0xab 1028k 60k", "-c", "read -P 0 1M 4k", ts.uri("ro"))
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io read back other data:\n%s", out)
	}
	// qemu sees READ_ONLY and refuses to open the export for writing
	// (the wire-level EPERM is TestTransmit_readOnly's).
	if out, err := tryTool("qemu-io", "-f", "raw", "-c", "write 0 4k", ts.uri("ro")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("qemu-io write to a read-only export: err %v\n%s", err, out)
	}
}
