package daemon_test

import (
	"io"
	"net/http"
	"strings"
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
