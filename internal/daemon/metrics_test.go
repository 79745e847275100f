package daemon_test

import (
	"bytes"
	"github.com/daxsnap/daxsnap/internal/export/nbd/nbdclient"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/daemon"
)

// scrapeHTTP GETs url and returns the body, failing t unless it is 200.
func scrapeHTTP(t testing.TB, url string) string {
	t.Helper()
	hc := http.Client{Timeout: time.Minute}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}

// Ensure that with MetricsAddr (serve --metrics-addr) a plain HTTP GET
// on that TCP address scrapes /metrics, that nothing else of the API is
// served there, and that the log names the address.
func TestMetricsAddr_servesMetricsOverTCP(t *testing.T) {
	e := newEnvWith(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	e.fileVol("vol", mib)
	a := e.d.MetricsAddr()
	if a == nil {
		t.Fatal("MetricsAddr is nil with Config.MetricsAddr set")
	}
	m := scrapeHTTP(t, "http://"+a.String()+"/metrics")
	for _, want := range []string{`daxsnap_device_size_bytes{device="vol"} 1.048576e+06`, "# TYPE go_goroutines gauge"} {
		if !strings.Contains(m, want) {
			t.Errorf("scrape of %s lacks %s", a, want)
		}
	}
	resp, err := http.Get("http://" + a.String() + "/v1/devices")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /v1/devices on the metrics address: %s, want 404 (the API stays on the control socket)", resp.Status)
	}
	if want := `msg="serving metrics" addr=` + a.String(); !strings.Contains(e.logs.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, e.logs)
	}
}

// Ensure that the metrics address is off by default and that a busy one
// stops the daemon from starting with an error naming it.
func TestMetricsAddr_offByDefaultAndBusyRefused(t *testing.T) {
	e := newEnv(t)
	if a := e.d.MetricsAddr(); a != nil {
		t.Fatalf("MetricsAddr is %v without Config.MetricsAddr", a)
	}
	first := newEnvWith(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	cfg := testConfig(t, e.logs)
	cfg.MetricsAddr = first.d.MetricsAddr().String()
	d, err := daemon.Start(cfg)
	if err == nil {
		d.Shutdown(nil)
		t.Fatalf("a second daemon started on the busy metrics address %s", cfg.MetricsAddr)
	}
	if !strings.Contains(err.Error(), cfg.MetricsAddr) || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Errorf("error %q does not name the address and the flag", err)
	}
}

// metricValue is the value of the sample series (name and labels as
// printed) in a scrape, and false when the scrape lacks it.
func metricValue(scrape, series string) (float64, bool) {
	for _, l := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// wantMetric fails t unless series is in scrape with a value that ok accepts.
func wantMetric(t testing.TB, scrape, series string, ok func(float64) bool, what string) {
	t.Helper()
	v, found := metricValue(scrape, series)
	if !found {
		t.Errorf("scrape lacks %s:\n%s", series, grepLines(scrape, "daxsnap_snapshot"))
	} else if !ok(v) {
		t.Errorf("%s = %v, want %s", series, v, what)
	}
}

func equals(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// mergeHeld starts merging snapshot name and returns once the merge
// has copied everything back but before it finishes, which it holds off
// until finish is called; finish returns once the merge request has.
// (The request runs aside: a merge this quick finishes under the locks
// the request takes after starting it.)
func (e *env) mergeHeld(name string) (finish func()) {
	e.t.Helper()
	at, gone := make(chan struct{}), make(chan struct{})
	var once sync.Once
	reset := e.setFailStep(func(step string) error {
		if step == "finish-merge" {
			once.Do(func() { close(at) })
			<-gone
		}
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := e.c.SnapshotMerge(bg, name, wire.SnapshotMerge{NoWait: true})
		done <- err
	}()
	var rel sync.Once
	release := func() { rel.Do(func() { close(gone); reset() }) }
	e.t.Cleanup(release)
	// The request answers at once (NoWait); a refusal need not wait the
	// minute out.
	var answer error
	select {
	case answer = <-done:
		done <- answer
	case <-at:
	}
	if answer != nil {
		release()
		e.t.Fatalf("snapshot merge %s: %v", name, answer)
	}
	select {
	case <-at:
	case <-time.After(time.Minute):
		release()
		e.t.Fatalf("the merge of %s did not reach its end in a minute", name)
	}
	return func() {
		e.t.Helper()
		release()
		if err := <-done; err != nil {
			e.t.Fatalf("snapshot merge %s: %v", name, err)
		}
	}
}

// Ensure that the scrape has each snapshot's COW use and size (bytes, by
// snapshot and origin, from the live target), its invalidation as a
// counter, and a running merge's progress.
func TestMetrics_snapshotCOWInvalidationAndMerge(t *testing.T) {
	e := newEnvWith(t, func(c *daemon.Config) { c.MetricsAddr = "127.0.0.1:0" })
	url := "http://" + e.d.MetricsAddr().String() + "/metrics"
	e.fileVol("vol", 4*mib)
	e.fileVol("vol2", 4*mib)
	e.snap("vol", "s1", withCOWSize(mib))
	e.snap("vol2", "full", withCOWSize(64*1024))
	data := bytes.Repeat([]byte{0xa5}, 256*1024)
	e.must("write vol", e.c.WriteData(bg, "vol", 0, data))
	e.c.WriteData(bg, "vol2", 0, data) // overflows full's COW: invalidates it

	m := scrapeHTTP(t, url)
	const s1 = `{origin="vol",snapshot="s1"}`
	wantMetric(t, m, "daxsnap_snapshot_cow_size_bytes"+s1, equals(mib), "the 1 MiB COW")
	wantMetric(t, m, "daxsnap_snapshot_cow_used_bytes"+s1, func(v float64) bool { return v >= 256*1024 && v < mib }, "the 256 KiB copied and metadata")
	wantMetric(t, m, "daxsnap_snapshot_invalidations_total"+s1, equals(0), "0")
	wantMetric(t, m, `daxsnap_snapshot_invalidations_total{origin="vol2",snapshot="full"}`, equals(1), "1 (its COW overflowed)")

	finish := e.mergeHeld("s1")
	m = scrapeHTTP(t, url)
	wantMetric(t, m, "daxsnap_snapshot_merge_progress_ratio"+s1, equals(1), "1 (copied back, not yet finished)")
	wantMetric(t, m, "daxsnap_snapshot_merge_remaining_chunks"+s1, equals(0), "0")
	finish()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, err := e.c.Snapshot(bg, "s1"); err != nil {
			break // merged
		}
		if time.Now().After(deadline) {
			t.Fatal("the merge of s1 did not finish in a minute once released")
		}
	}
	if m = scrapeHTTP(t, url); strings.Contains(m, `snapshot="s1"`) {
		t.Errorf("s1's series outlive it:\n%s", grepLines(m, `snapshot="s1"`))
	}
}

// Ensure that a scrape taken after a workload that makes the metric
// families appear (a snapshot using its COW, a merge under way, NBD and
// FUSE traffic, a checkpoint taken) passes `promtool check metrics`, and
// that the example alerts pass `promtool check rules` and their unit
// tests.
func TestMetrics_promtool(t *testing.T) {
	testutil.RequireTool(t, "promtool")
	testutil.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testutil.Skip(t, "no /dev/fuse: modprobe fuse")
	}
	e := newEnvWith(t, func(c *daemon.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.FUSEDir = filepath.Join(c.StateDir, daemon.FUSEDirName)
	})
	e.fileVol("vol", 4*mib)
	e.snap("vol", "s1", withCOWSize(mib))
	// A checkpointed memory volume with one checkpoint taken.
	e.pmemVol("mem", mib)
	e.enableCheckpoints("mem", t.TempDir(), 0)
	e.checkpoint("mem")

	// NBD: writes that fill the COW, a read and a flush.
	var sock string
	for _, a := range e.d.NBDAddrs() {
		if a.Network() == "unix" {
			sock = a.String()
		}
	}
	nc, err := nbdclient.Dial("unix", sock, "vol")
	if err != nil {
		t.Fatalf("NBD connect to vol on %s: %v", sock, err)
	}
	data := bytes.Repeat([]byte{0x5a}, 256*1024)
	e.must("NBD write", nc.WriteAt(data, 0))
	e.must("NBD read", nc.ReadAt(data, 0))
	e.must("NBD flush", nc.Flush())
	// FUSE: a read of the snapshot's file.
	if _, err := os.ReadFile(filepath.Join(e.d.FUSEDir(), "s1")); err != nil {
		t.Fatalf("read s1 through FUSE: %v", err)
	}
	e.waitOpenCount("s1", 0) // the kernel releases the file after the close returns
	nc.Close()
	e.waitOpenCount("vol", 0) // the NBD server lets go after the close returns
	finish := e.mergeHeld("s1")
	defer finish()

	m := scrapeHTTP(t, "http://"+e.d.MetricsAddr().String()+"/metrics")
	for _, family := range metricFamilies {
		if !strings.Contains(m, "\n# TYPE "+family+" ") {
			t.Errorf("the scrape lacks %s", family)
		}
	}
	atLeast := func(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
	wantMetric(t, m, `daxsnap_nbd_bytes_total{op="write"}`, equals(256*1024), "the 256 KiB written")
	wantMetric(t, m, `daxsnap_nbd_bytes_total{op="read"}`, equals(256*1024), "the 256 KiB read")
	wantMetric(t, m, `daxsnap_nbd_requests_total{op="flush"}`, equals(1), "1")
	wantMetric(t, m, `daxsnap_nbd_requests_total{op="write"}`, atLeast(1), "at least 1")
	wantMetric(t, m, `daxsnap_nbd_errors_total{op="write"}`, equals(0), "0")
	wantMetric(t, m, "daxsnap_nbd_connections_total", equals(1), "1")
	wantMetric(t, m, `daxsnap_fuse_bytes_total{op="read"}`, equals(4*mib), "the 4 MiB file read")
	wantMetric(t, m, `daxsnap_fuse_requests_total{op="open"}`, atLeast(1), "at least 1")
	wantMetric(t, m, `daxsnap_fuse_errors_total{op="read"}`, equals(0), "0")
	wantMetric(t, m, `daxsnap_checkpoint_completed_total{device="mem"}`, equals(1), "1")
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(m)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	rules := filepath.Join("..", "..", "contrib", "prometheus")
	for _, args := range [][]string{{"check", "rules", "daxsnap-alerts.yml"}, {"test", "rules", "daxsnap-alerts_test.yml"}} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = rules
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// metricFamilies are the families docs/metrics.md lists that the
// workload of TestMetrics_promtool makes appear.
var metricFamilies = []string{
	"daxsnap_device_io_requests_total",
	"daxsnap_snapshot_cow_used_bytes",
	"daxsnap_snapshot_cow_size_bytes",
	"daxsnap_snapshot_invalidations_total",
	"daxsnap_snapshot_merge_remaining_chunks",
	"daxsnap_snapshot_merge_progress_ratio",
	"daxsnap_dax_sessions",
	"daxsnap_nbd_connections",
	"daxsnap_nbd_connections_total",
	"daxsnap_nbd_requests_total",
	"daxsnap_nbd_bytes_total",
	"daxsnap_nbd_errors_total",
	"daxsnap_fuse_requests_total",
	"daxsnap_fuse_errors_total",
	"daxsnap_fuse_bytes_total",
	"daxsnap_checkpoint_enabled",
	"daxsnap_checkpoint_last_complete_timestamp_seconds",
	"daxsnap_checkpoint_last_complete_seq",
	"daxsnap_checkpoint_last_duration_seconds",
	"daxsnap_checkpoint_last_cut_seconds",
	"daxsnap_checkpoint_completed_total",
	"daxsnap_checkpoint_errors_total",
	"daxsnap_checkpoint_written_bytes_total",
	"daxsnap_checkpoint_backpressure_waits_total",
	"daxsnap_checkpoint_backpressure_seconds_total",
	"daxsnap_checkpoint_buffer_bytes",
	"daxsnap_checkpoint_buffer_capacity_bytes",
	"daxsnap_checkpoint_in_progress",
}
