package daemon_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/daxsnap/daxsnap/internal/backup/s3test"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// A volume checkpointed to an object store comes back from it after a
// reboot, byte for byte as of its last checkpoint, and its checkpoints
// go on from there. The endpoint is given at enable only (not in the
// environment): the restart finds it in the device's record. Restored
// whole at the start, and on demand (serve --restore=lazy).
func TestCheckpoint_s3RebootRestores(t *testing.T) {
	t.Run("eager", func(t *testing.T) { testS3RebootRestores(t, false) })
	t.Run("lazy", func(t *testing.T) { testS3RebootRestores(t, true) })
}

func testS3RebootRestores(t *testing.T, lazy bool) {
	testutil.RequireRoot(t)
	srv := s3test.Shared(t)
	srv.Setenv(t)
	t.Setenv("AWS_ENDPOINT_URL", "")
	const size = 4 << 20
	e := newEnv(t)
	region := e.pmemVol("vol", size)
	prefix := "ck-" + t.Name()[strings.LastIndex(t.Name(), "/")+1:]
	url := "s3://" + srv.Bucket + "/" + prefix
	if _, err := e.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: url, IntervalMS: 3600_000, Journal: "/tmp/j"}); err == nil {
		t.Fatal("checkpoint enable to s3 with a journal: accepted")
	}
	du, err := e.c.CheckpointEnable(bg, "vol", wire.CheckpointEnable{Path: url + "/", Endpoint: srv.Endpoint, IntervalMS: 3600_000})
	if err != nil {
		t.Fatal(err)
	}
	if du.State != wire.DurabilityCheckpointed || du.Path != url || du.Journal != "" || du.Endpoint != srv.Endpoint {
		t.Fatalf("checkpoint enable to %s = %+v", url, du)
	}

	r := rand.New(rand.NewPCG(3, 4))
	want := make([]byte, size)
	scribble := func(n int) {
		for range n {
			off := r.IntN(size - 70000)
			p := want[off : off+1+r.IntN(70000)]
			if r.IntN(3) == 0 {
				clear(p)
			} else {
				for i := range p {
					p[i] = byte(r.Uint32())
				}
			}
			e.write("vol", int64(off), p)
		}
	}
	scribble(20)
	e.checkpoint("vol")
	scribble(10) // an incremental checkpoint
	last := e.checkpoint("vol")
	if last.Seq != 2 {
		t.Fatalf("second checkpoint is %d", last.Seq)
	}
	if in := e.info("vol"); !strings.Contains(in.Durability.Text, "checkpointed to "+url+": last complete") {
		t.Fatalf("info durability: %q", in.Durability.Text)
	}
	var manifests []string
	for o := range srv.Client.ListObjects(context.Background(), srv.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/checkpoints/vol/", Recursive: true}) {
		manifests = append(manifests, o.Key)
	}
	if len(manifests) != 2 {
		t.Fatalf("manifests in the store: %q, want 2", manifests)
	}
	saved := bytes.Clone(want)
	scribble(5) // after the last checkpoint: lost at the reboot

	e.stop()
	if err := os.Remove(region); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Dir(region))
	e.cfg.LazyRestore = lazy
	e.start()

	if got := e.read("vol", 0, size); !bytes.Equal(got, saved) {
		n := 0
		for i := range got {
			if got[i] != saved[i] {
				n++
			}
		}
		t.Fatalf("the restored volume differs from checkpoint %d in %d bytes", last.Seq, n)
	}
	in := e.info("vol")
	for deadline := time.Now().Add(time.Minute); lazy && in.Durability != nil && in.Durability.Restoring != nil && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the restore on demand settles
		in = e.info("vol")
	}
	if in.Note != "" || in.Durability == nil || in.Durability.Restored == nil || in.Durability.Restored.Seq != last.Seq {
		t.Fatalf("info after the restore: note %q, durability %+v; want restored from checkpoint %d", in.Note, in.Durability, last.Seq)
	}
	want = saved
	scribble(3)
	if next := e.checkpoint("vol"); next.Seq != last.Seq+1 {
		t.Fatalf("checkpoint after the restore is %d, want %d", next.Seq, last.Seq+1)
	}
}
