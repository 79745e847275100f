package main

import (
	"context"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/daxsnap/daxsnap/internal/backup/s3test"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// `checkpoint enable VOL --to s3://... --endpoint URL` checkpoints to the
// object store: each checkpoint is a manifest there, status names the
// place, and inspect says it does not read one.
func TestCLI_checkpointToS3(t *testing.T) {
	testutil.RequireRoot(t) // userfaultfd write-protect on the region
	srv := s3test.Shared(t)
	srv.Setenv(t)
	t.Setenv("AWS_ENDPOINT_URL", "") // --endpoint only
	c := newCLI(t)
	c.ok("pmem", "create", "r", "--size", "4M")
	c.ok("create", "vol", "--table", "0 8192 linear "+c.shm+"/daxsnap/r 0")
	to := "s3://" + srv.Bucket + "/cks"
	c.fail("--endpoint is for an object store", "checkpoint", "enable", "vol", "--to", "/tmp/x.img", "--endpoint", srv.Endpoint)
	out := c.ok("checkpoint", "enable", "vol", "--to", to, "--endpoint", srv.Endpoint, "--interval", "1h")
	if want := "vol: checkpointed to " + to + " every 1h0m0s"; !strings.HasPrefix(out, want) {
		t.Fatalf("checkpoint enable: %q, want %q...", out, want)
	}
	if out := c.ok("checkpoint", "vol"); !strings.HasPrefix(out, "vol: checkpoint 1 complete") {
		t.Fatalf("checkpoint vol: %q", out)
	}
	if out := c.ok("checkpoint", "status", "vol"); !strings.HasPrefix(out, "vol: checkpointed to "+to+": last complete") {
		t.Fatalf("checkpoint status vol: %q", out)
	}
	if _, err := srv.Client.StatObject(context.Background(), srv.Bucket, "cks/checkpoints/vol/00000000000000000001.json", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("the manifest of checkpoint 1: %v", err)
	}
	c.fail("is an object store", "checkpoint", "inspect", to)
}
