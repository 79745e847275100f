// Package s3test starts a real S3 server for tests: SeaweedFS's `weed
// mini` (master, volume server, filer and S3 gateway in one process) on
// loopback ports of its own, in a temporary directory, with one bucket.
//
// The weed binary is $DAXSNAP_WEED or `weed` in PATH; .ci/run builds it
// (.ci/weed). Without it a test skips, or fails under DAXSNAP_STRICT=1.
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// WeedEnv names the weed binary to run.
const WeedEnv = "DAXSNAP_WEED"

// Server is a running S3 server.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Bucket    string
	Client    *minio.Client
}

// Env returns the environment variables that point daxsnap (and awscli)
// at the server.
func (s *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_ENDPOINT_URL=" + s.Endpoint, "AWS_REGION=us-east-1"}
}

// Setenv sets Env for the rest of test t.
func (s *Server) Setenv(t testing.TB) {
	t.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Weed returns the weed binary's path, or "" when there is none.
func Weed() string {
	if p := os.Getenv(WeedEnv); p != "" {
		return p
	}
	p, _ := exec.LookPath("weed")
	return p
}

var (
	shared     *Server
	sharedErr  error
	sharedOnce sync.Once
)

// Shared returns one server for the whole test binary (started by the
// first caller, stopped when the process exits), with a fresh bucket for
// t: starting weed takes seconds, a bucket none.
func Shared(t testing.TB) *Server {
	t.Helper()
	weed := Weed()
	if weed == "" {
		testutil.Skip(t, "no SeaweedFS weed binary: set "+WeedEnv+" or put weed in PATH (.ci/run builds it: see .ci/weed)")
	}
	sharedOnce.Do(func() { shared, sharedErr = start(weed, os.TempDir()) })
	if sharedErr != nil {
		t.Fatalf("start S3 server: %v", sharedErr)
	}
	s := *shared
	s.Bucket = fmt.Sprintf("t%d-%d", time.Now().UnixNano(), os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Client.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %s: %v", s.Bucket, err)
	}
	return &s
}

// freePorts returns n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// procs are the weed processes this test binary started; Stop ends them.
var (
	procsMu sync.Mutex
	procs   []proc
)

type proc struct {
	p    *os.Process
	done chan struct{} // closed when it exited
}

// Stop ends every server this binary started (TestMain calls it; the
// servers die with the test process anyway through Pdeathsig).
func Stop() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, c := range procs {
		c.p.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.p.Kill()
			<-c.done
		}
	}
	procs = nil
}

// start runs weed mini in a new directory under tmp and waits until its S3
// gateway answers signed requests.
func start(weed, tmp string) (*Server, error) {
	var lastErr error
	for range 3 { // a port taken between freePorts and weed's listen: retry
		s, err := try(weed, tmp)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func try(weed, tmp string) (*Server, error) {
	p, err := freePorts(12)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tmp, "daxsnap-weed-")
	if err != nil {
		return nil, err
	}
	s := &Server{Endpoint: "http://127.0.0.1:" + strconv.Itoa(p[0]), AccessKey: "daxsnaptest", SecretKey: "daxsnaptestsecret"}
	args := []string{"mini", "-dir=" + dir, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-s3.port=" + strconv.Itoa(p[0]), "-s3.port.grpc=" + strconv.Itoa(p[1]),
		"-master.port=" + strconv.Itoa(p[2]), "-master.port.grpc=" + strconv.Itoa(p[3]),
		"-volume.port=" + strconv.Itoa(p[4]), "-volume.port.grpc=" + strconv.Itoa(p[5]),
		"-filer.port=" + strconv.Itoa(p[6]), "-filer.port.grpc=" + strconv.Itoa(p[7]),
		"-admin.port=" + strconv.Itoa(p[8]), "-admin.port.grpc=" + strconv.Itoa(p[9]),
		"-admin.port.legacy=0", "-debug.port=" + strconv.Itoa(p[10]),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
		"-master.telemetry=false", "-master.volumeSizeLimitMB=256", "-volume.max=0",
	}
	cmd := exec.Command(weed, args...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+s.AccessKey, "AWS_SECRET_ACCESS_KEY="+s.SecretKey)
	log := &logBuf{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", weed, err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() { err := cmd.Wait(); os.RemoveAll(dir); exited <- err; close(done) }()
	s.Client, err = minio.New("127.0.0.1:"+strconv.Itoa(p[0]), &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Region: "us-east-1", BucketLookup: minio.BucketLookupPath})
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		// A bucket made and removed proves the filer and the volume
		// server behind the gateway are up, not only its port.
		probe := "probe-" + strconv.Itoa(p[0])
		err = s.Client.MakeBucket(ctx, probe, minio.MakeBucketOptions{})
		if err == nil {
			err = s.Client.RemoveBucket(ctx, probe)
		}
		cancel()
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("weed mini exited (%v) before serving S3; its log:\n%s", werr, log.tail(3000))
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return nil, fmt.Errorf("weed mini's S3 gateway did not come up within 3 minutes (%v); its log:\n%s", err, log.tail(3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	procsMu.Lock()
	procs = append(procs, proc{cmd.Process, done})
	procsMu.Unlock()
	return s, nil
}

// logBuf keeps the last 64 KiB a process wrote.
type logBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > 64<<10 {
		l.b = append([]byte(nil), l.b[len(l.b)-32<<10:]...)
	}
	return len(p), nil
}

func (l *logBuf) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b[max(0, len(l.b)-n):])
}
