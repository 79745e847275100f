package daemon_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// Ensure that snapshots taken and removed while fio writes to the origin
// over NBD (libnbd) cost fio nothing: no error, and its crc32c verify of
// every block it wrote passes. For a DAX origin too.
func TestSnapshot_underFio(t *testing.T) {
	testutil.RequireTool(t, "fio")
	if out, _ := exec.Command("fio", "--enghelp=nbd").CombinedOutput(); !strings.Contains(string(out), "uri") {
		testutil.Skip(t, "this fio has no nbd ioengine (Debian's fio links libnbd): "+string(out))
	}
	for _, dax := range []bool{false, true} {
		t.Run(fmt.Sprintf("dax=%v", dax), func(t *testing.T) {
			e := newEnv(t)
			const size = 8 * mib
			if dax {
				e.pmemVol("vol", size)
			} else {
				e.fileVol("vol", size)
			}
			uri := "nbd+unix:///vol?socket=" + filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
			// 2048 writes at 2000 IOPS: about 1 s of writing, then the verify.
			fio := exec.Command("fio", "--name=snap", "--ioengine=nbd", "--uri="+uri, "--rw=randwrite", "--bs=4k",
				"--size=8m", "--iodepth=8", "--rate_iops=2000", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
				"--verify_state_save=0", "--output-format=json")
			var out strings.Builder
			fio.Stdout, fio.Stderr = &out, &out
			if err := fio.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- fio.Wait() }()
			ops := 0
			var fioErr error
		loop:
			for i := 0; ; i++ {
				select {
				case fioErr = <-exited:
					break loop
				case <-time.After(150 * time.Millisecond):
				}
				name := fmt.Sprintf("s%d", i)
				if _, err := e.c.SnapshotCreate(bg, wire.SnapshotCreate{Origin: "vol", Name: name, ChunkSize: 4096 << (i % 3), COWSize: size + mib}); err != nil {
					t.Fatalf("snapshot create %s under fio: %v", name, err)
				}
				ops++
				if i%2 == 1 {
					e.must("snapshot remove", e.c.SnapshotRemove(bg, fmt.Sprintf("s%d", i-1)))
					ops++
				}
			}
			if fioErr != nil {
				t.Fatalf("fio: %v\n%s", fioErr, out.String())
			}
			if j := testutil.FIOResult(t, out.String()); j.Error != 0 || j.Write.Bytes != size || j.Read.Bytes != size {
				t.Fatalf("fio: error %d, wrote %d, verified %d bytes; want %d each", j.Error, j.Write.Bytes, j.Read.Bytes, size)
			}
			if ops < 3 {
				t.Fatalf("only %d snapshot verbs ran while fio wrote: the test proves nothing", ops)
			}
			copied := 0
			for _, s := range e.snapList("vol") {
				if s.State != wire.SnapshotActive {
					t.Fatalf("after fio: %+v", s)
				}
				if s.Exceptions > 0 {
					copied++
				}
				e.must("remove", e.c.SnapshotRemove(bg, s.Name))
			}
			if copied == 0 {
				t.Fatal("no remaining snapshot saw fio's writes copy out to it")
			}
			e.wantDevices("vol")
			t.Logf("%d snapshot creates and removes while fio wrote and verified %d MiB", ops, size/mib)
		})
	}
}
