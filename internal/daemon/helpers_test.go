package daemon_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/daemon/daemontest"
	"github.com/daxsnap/daxsnap/internal/testutil"
	"github.com/daxsnap/daxsnap/internal/wire"
)

// env is a daemon on a temporary state directory with its memory
// regions in a per-test directory under /dev/shm.
type env struct {
	t    testing.TB
	cfg  daemon.Config
	d    *daemon.Daemon
	c    *apiclient.Client
	logs *testutil.LogBuffer
	// failStep is this env's daemon's FailStep, kept across restarts.
	failStep atomic.Pointer[func(step string) error]
}

// pmemDir makes a per-test directory on /dev/shm, removed afterwards.
func pmemDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "daxsnap-test-")
	if err != nil {
		t.Skipf("no /dev/shm to put memory regions in: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newEnv(t testing.TB) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv with cfg, if not nil, changing the configuration
// before the daemon starts.
func newEnvWith(t testing.TB, cfg func(*daemon.Config)) *env {
	t.Helper()
	logs := &testutil.LogBuffer{}
	e := &env{t: t, logs: logs, cfg: testConfig(t, logs)}
	e.cfg.Snapshots.FailStep = func(step string) error {
		if fn := e.failStep.Load(); fn != nil {
			return (*fn)(step)
		}
		return nil
	}
	if cfg != nil {
		cfg(&e.cfg)
	}
	e.start()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("daemon logs:\n%s", logs)
		}
	})
	return e
}

// testConfig is a daemon configuration on temporary directories,
// logging to logs.
func testConfig(t testing.TB, logs *testutil.LogBuffer) daemon.Config {
	return daemon.Config{
		StateDir: t.TempDir(),
		PmemDir:  pmemDir(t),
		Version:  "test",
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (e *env) start() {
	e.t.Helper()
	e.d, e.c = daemontest.Start(e.t, e.cfg)
}

func (e *env) stop() {
	if e.d == nil {
		return
	}
	if err := daemontest.Stop(e.d, e.c); err != nil {
		e.t.Error(err)
	}
	e.d = nil
}

// setFailStep makes the snapshot verbs of e's daemon (and of the daemons
// restart starts) fail the step fn fails, until reset is called.
func (e *env) setFailStep(fn func(step string) error) (reset func()) {
	e.failStep.Store(&fn)
	return func() { e.failStep.Store(nil) }
}

func (e *env) restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

// region creates a memory region of size bytes and returns its path.
func (e *env) region(name string, size int64) string {
	e.t.Helper()
	p, err := e.c.PmemCreate(bg, wire.PmemCreate{Name: name, Size: size})
	if err != nil {
		e.t.Fatalf("pmem create %s: %v", name, err)
	}
	return p.Path
}

func (e *env) create(name, table string) wire.Info {
	e.t.Helper()
	in, err := e.c.Create(bg, wire.DeviceCreate{Name: name, Table: table})
	if err != nil {
		e.t.Fatalf("create %s: %v", name, err)
	}
	return in
}

func (e *env) info(name string) wire.Info {
	e.t.Helper()
	in, err := e.c.Info(bg, name)
	if err != nil {
		e.t.Fatalf("info %s: %v", name, err)
	}
	return in
}

// waitOpenCount waits until name's open count is want. An NBD client
// that sent DISC may exit before the server has closed its side, so the
// count drops shortly after the client is gone, not before.
func (e *env) waitOpenCount(name string, want int) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		in := e.info(name)
		if in.OpenCount == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("open count of %s is %d after a minute, want %d", name, in.OpenCount, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) table(name string, inactive bool) string {
	e.t.Helper()
	txt, err := e.c.Table(bg, name, inactive)
	if err != nil {
		e.t.Fatalf("table %s: %v", name, err)
	}
	return txt.Text
}

func (e *env) must(what string, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
}

// wantCode checks that err is an API error with code and a message
// mentioning every fragment.
func wantCode(t *testing.T, err error, code string, fragments ...string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want API error %s", err, code)
	}
	if ae.Code != code {
		t.Fatalf("code %s (%q), want %s", ae.Code, ae.Message, code)
	}
	for _, f := range fragments {
		if !strings.Contains(ae.Message, f) {
			t.Errorf("message %q lacks %q", ae.Message, f)
		}
	}
}

func linear(path string, sectors int) string {
	return fmt.Sprintf("0 %d linear %s 0", sectors, path)
}

func wireCreateRO(name string) wire.DeviceCreate {
	return wire.DeviceCreate{Name: name, Table: "0 8 zero", ReadOnly: true}
}
