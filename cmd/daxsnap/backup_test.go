package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/backup/s3test"
	"github.com/daxsnap/daxsnap/internal/wire"
	"github.com/minio/minio-go/v7"
)

// fileVolSize creates device name over a new file of size bytes.
func (c *cli) fileVolSize(name string, size int64) {
	c.t.Helper()
	path := filepath.Join(c.t.TempDir(), name+".img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		c.t.Fatal(err)
	}
	c.ok("create", name, "--table", fmt.Sprintf("0 %d linear %s 0", size/512, path))
}

// Ensure that a full backup and 10 incrementals of a volume written with
// random patterns restore byte-identical (SHA-256) on another daemon,
// every generation, and that `backup list` shows the chain.
func TestCLI_backupRestoreOtherDaemon(t *testing.T) {
	srv := s3test.Shared(t)
	srv.Setenv(t)
	a, b := newCLI(t), newCLI(t)
	const size = 6<<20 + 64<<10
	a.fileVolSize("vol", size)
	r := rand.New(rand.NewPCG(7, 8))
	for range 4 {
		a.scribble(r, "vol")
	}
	to := "s3://" + srv.Bucket + "/hosts/a"
	want := map[string][32]byte{}
	for g := 0; g <= 10; g++ {
		name := fmt.Sprintf("g%02d", g)
		a.ok("snapshot", "create", "vol", name, "--cow-size", "8M")
		args := []string{"backup", name, "--to", to, "--json"}
		if g > 0 {
			args = append(args, "--since", fmt.Sprintf("g%02d", g-1))
		}
		var rep backupJSON
		if err := json.Unmarshal([]byte(a.ok(args...)), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Size != size || (g > 0) != (rep.Parent != "") {
			t.Fatalf("backup %s: %+v", name, rep)
		}
		if g > 0 { // an increment reads exactly what changed: never silently full or short
			var d wire.SnapshotDiff
			if err := json.Unmarshal([]byte(a.ok("snapshot", "diff", fmt.Sprintf("g%02d", g-1), name, "--json")), &d); err != nil {
				t.Fatal(err)
			}
			if rep.Read != d.Changed || rep.Sent > d.Changed || d.Changed >= size {
				t.Fatalf("backup %s --since g%02d: read %d, sent %d; snapshot diff says %d changed of %d", name, g-1, rep.Read, rep.Sent, d.Changed, size)
			}
		}
		want[name] = a.image(name)
		a.scribble(r, "vol")
	}
	list := b.ok("backup", "list", to)
	if !strings.Contains(list, "g10") || !strings.Contains(list, "g09") || strings.Contains(list, "BAD") {
		t.Fatalf("backup list:\n%s", list)
	}
	b.fileVolSize("copy", size)
	for g := 0; g <= 10; g++ {
		name := fmt.Sprintf("g%02d", g)
		out := b.ok("restore", to+"/"+name, "copy")
		if !strings.HasPrefix(out, "restored "+name+" onto copy: ") {
			t.Fatalf("restore: %q", out)
		}
		if b.image("copy") != want[name] {
			t.Fatalf("generation %s restored on another daemon differs from the snapshot (SHA-256)", name)
		}
	}
	// Progress: off a terminal, a closing line per phase with bytes and time.
	code, _, errOut := runIn("", "--socket", b.socket, "restore", to+"/g10", "copy")
	if code != 0 || !strings.Contains(errOut, "copy: verify: ") || !strings.Contains(errOut, "copy: write: ") || strings.Count(errOut, "(100.0%)") != 2 || strings.Contains(errOut, "\r") {
		t.Fatalf("restore's progress lines: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runIn("", "--socket", a.socket, "backup", "g10", "--to", to+"-again")
	if code != 0 || !strings.Contains(errOut, "g10: upload: ") || strings.Count(errOut, "(100.0%)") != 1 || strings.Contains(errOut, "\r") {
		t.Fatalf("backup's progress lines: exit %d, stderr %q", code, errOut)
	}
	// A pair whose changes the daemon cannot tell (g09 written directly)
	// is refused, not backed up whole or short.
	a.scribble(r, "g09")
	a.ok("snapshot", "create", "vol", "x", "--cow-size", "8M")
	a.fail("leave --since out", "backup", "x", "--to", to, "--since", "g09")
	b.fileVolSize("small", size-4096)
	b.fail("at least that large", "restore", to+"/g03", "small")
	b.fail("is not a snapshot", "backup", "copy", "--to", to)
}

// Ensure that a `backup` killed with SIGKILL mid-upload leaves no
// manifest, and that the next run uploads only the objects that are
// missing and stores the snapshot exactly.
func TestCLI_backupKill9Resumes(t *testing.T) {
	srv := s3test.Shared(t)
	srv.Setenv(t)
	c := newCLI(t)
	const size = 128 << 20
	c.fileVolSize("vol", size)
	v := c.nbd("vol")
	r := rand.New(rand.NewPCG(9, 10))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if err := v.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	v.Close()
	c.ok("snapshot", "create", "vol", "s1", "--cow-size", "8M")
	to := "s3://" + srv.Bucket + "/k"
	count := func(prefix string) int {
		n := 0
		for obj := range srv.Client.ListObjects(context.Background(), srv.Bucket, minio.ListObjectsOptions{Prefix: "k/" + prefix, Recursive: true}) {
			if obj.Err != nil {
				t.Fatal(obj.Err)
			}
			n++
		}
		return n
	}
	cmd, stderr := daxsnapProcess(t, "--socket", c.socket, "backup", "s1", "--to", to, "--jobs", "1")
	waitFor(t, "the first uploaded objects", func() bool { return count("chunks/") >= 3 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if count("snapshots/") != 0 {
		t.Fatalf("the killed backup finished (or left a manifest) before SIGKILL: stderr %q", stderr.String())
	}
	before := count("chunks/")
	if before >= size/(2<<20) {
		t.Fatalf("all %d objects were uploaded before the kill: the test did not interrupt anything", before)
	}
	var rep backupJSON
	if err := json.Unmarshal([]byte(c.ok("backup", "s1", "--to", to, "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Objects != size/(2<<20) || rep.Uploaded != rep.Objects-before || rep.Sent != int64(rep.Uploaded)*(2<<20) {
		t.Fatalf("after a kill with %d objects stored: %+v; want %d objects, %d new", before, rep, size/(2<<20), size/(2<<20)-before)
	}
	want := c.image("s1")
	c.fileVolSize("copy", size)
	c.ok("restore", to+"/s1", "copy")
	if c.image("copy") != want {
		t.Fatal("the resumed backup restores other bytes than the snapshot's")
	}
	// A restore run again with --resume onto a volume that holds it
	// downloads nothing.
	var again backupJSON
	if err := json.Unmarshal([]byte(c.ok("restore", to+"/s1", "copy", "--resume", "--json")), &again); err != nil {
		t.Fatal(err)
	}
	if again.Present != size/(2<<20) || again.Sent != 0 || c.image("copy") != want {
		t.Fatalf("restore --resume of a restored volume: %+v; want all %d objects present, none downloaded", again, size/(2<<20))
	}
}

// Ensure that backup, backup list and restore find their credentials in
// ~/.aws/credentials (the default profile, and AWS_PROFILE's) and their
// server through --endpoint, with no AWS_* or MINIO_* variable set, and
// that a wrong secret there is refused with the server's reason.
func TestCLI_backupCredentialsFileAndEndpoint(t *testing.T) {
	srv := s3test.Shared(t)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
		"AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.MkdirAll(filepath.Join(home, ".aws"), 0o700); err != nil {
		t.Fatal(err)
	}
	creds := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n[wrong]\naws_access_key_id = %s\naws_secret_access_key = not-the-secret\n",
		srv.AccessKey, srv.SecretKey, srv.AccessKey)
	if err := os.WriteFile(filepath.Join(home, ".aws", "credentials"), []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t)
	c.fileVolSize("vol", 4<<20)
	c.scribble(rand.New(rand.NewPCG(3, 4)), "vol")
	c.ok("snapshot", "create", "vol", "s1", "--cow-size", "8M")
	to := "s3://" + srv.Bucket + "/creds"
	c.ok("backup", "s1", "--to", to, "--endpoint", srv.Endpoint, "--no-progress")
	if out := c.ok("backup", "list", to, "--endpoint", srv.Endpoint); !strings.Contains(out, "s1") {
		t.Fatalf("backup list: %q", out)
	}
	c.fileVolSize("copy", 4<<20)
	c.ok("restore", to+"/s1", "copy", "--endpoint", srv.Endpoint, "--no-progress")
	if c.image("copy") != c.image("s1") {
		t.Fatal("the restore differs from the snapshot")
	}
	t.Setenv("AWS_PROFILE", "wrong")
	c.fail("SignatureDoesNotMatch", "backup", "list", to, "--endpoint", srv.Endpoint)
}
