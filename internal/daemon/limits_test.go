package daemon_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/api/apiclient"
	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// readChildEnv makes the test binary read device data through the
// control API (as whatever uid runs it): "SOCKET NAME...".
const readChildEnv = "DAXSNAP_TEST_READ_DATA"

// readChild reads 512 bytes of each named device and prints, per name,
// "" or the error's code and message, as JSON.
func readChild(arg string) int {
	f := strings.Fields(arg)
	c := apiclient.New(f[0])
	res := map[string]string{}
	for _, name := range f[1:] {
		_, err := c.ReadData(bg, name, 0, 512)
		res[name] = childError(err)
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// childError is how a child reports err: "", or the API error's code and
// message, or the error.
func childError(err error) string {
	switch err := err.(type) {
	case nil:
		return ""
	case *api.Error:
		return err.Code + ": " + err.Message
	}
	return err.Error()
}

// runAsNobody runs a copy of this test binary as uid 65534 with env set,
// and decodes its JSON output into v.
func runAsNobody(t *testing.T, env string, v any) {
	t.Helper()
	cmd := exec.Command(copyTestBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child as uid 65534: %v (%s)", err, out)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
}

// Ensure that reading a device's data through the control API obeys the
// device's owner and mode, as NBD and DAX maps do: uid 65534 reads a 0644
// device and its own, never root's 0600 one, and is told why.
func TestDaemon_dataReadObeysMode(t *testing.T) {
	testutil.RequireRoot(t)
	e := newEnv(t)
	openToOthers(e.cfg.StateDir)
	os.Chmod(e.d.SocketPath(), 0o666)
	e.create("secret", "0 8 zero")
	e.createOwned("shared", "0 8 zero", 0, 0, "0644")
	e.createOwned("own", "0 8 zero", nobody, nobody, "0600")
	e.createOwned("group", "0 8 zero", 0, nobody, "0640")
	var res map[string]string
	runAsNobody(t, readChildEnv+"="+e.d.SocketPath()+" secret shared own group", &res)
	for _, name := range []string{"shared", "own", "group"} {
		if res[name] != "" {
			t.Errorf("uid 65534 reading %s: %s, want allowed", name, res[name])
		}
	}
	got := res["secret"]
	if !strings.HasPrefix(got, "permission_denied: ") || !strings.Contains(got, "uid 65534") ||
		!strings.Contains(got, "read the data of secret") || !strings.Contains(got, "mode 0600") {
		t.Errorf("uid 65534 reading secret: %q, want a refusal saying who, what and why", got)
	}
	if _, err := e.c.ReadData(bg, "secret", 0, 512); err != nil {
		t.Errorf("root reading secret: %v", err)
	}
}

// trickleChildEnv makes the test binary a hostile control API client:
// "SOCKET N" opens N connections that trickle a header (even ones) or a
// body (odd ones) a byte at a time, prints "opened", then, once each
// connection has ended or a minute and a half has passed, how each
// ended, as JSON.
const trickleChildEnv = "DAXSNAP_TEST_TRICKLE"

// trickleResult is how each of the trickling connections ended:
// "refused: MESSAGE" (503), "ended" (closed by the server, or any other
// reply), or "open" (still open at the child's deadline).
type trickleResult []string

func trickleChild(arg string) int {
	var sock string
	var n int
	if _, err := fmt.Sscan(arg, &sock, &n); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	res := make(trickleResult, n)
	var wg sync.WaitGroup
	for i := range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			res[i] = "dial: " + err.Error()
			continue
		}
		head := "GET /v1/devices HTTP/1.1\r\nHost: d\r\n"
		if i%2 == 1 {
			// Answered at once; the server then reads the body to reuse
			// the connection.
			head = "GET /v1/devices HTTP/1.1\r\nHost: d\r\nContent-Length: 100000\r\n\r\n"
		}
		c.Write([]byte(head))
		ended := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(io.LimitReader(c, 4096))
			if s := string(b); strings.HasPrefix(s, "HTTP/1.1 503") {
				_, body, _ := strings.Cut(s, "\r\n\r\n")
				ended <- "refused: " + body
			} else {
				ended <- "ended"
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			deadline := time.After(90 * time.Second)
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case r := <-ended:
					res[i] = r
					return
				case <-deadline:
					res[i] = "open"
					return
				case <-tick.C:
					if i%2 == 0 {
						c.Write([]byte("X: y\r\n"))
					} else {
						c.Write([]byte("z"))
					}
				}
			}
		}()
	}
	fmt.Println("opened")
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// Ensure that the control socket bounds what other users hold: a
// connection that trickles its header or body is closed (read
// timeouts), connections beyond the cap are refused with a 503 that says
// why, and root's verbs keep working meanwhile.
func TestDaemon_controlSocketLimits(t *testing.T) {
	testutil.RequireRoot(t)
	const max, n = 4, 12
	e := newEnvWith(t, func(c *daemon.Config) {
		c.ControlLimits = api.Limits{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second,
			IdleTimeout: 5 * time.Second, MaxConns: max}
	})
	openToOthers(e.cfg.StateDir)
	os.Chmod(e.d.SocketPath(), 0o666)
	e.create("vol", "0 8 zero")

	cmd := exec.Command(copyTestBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", trickleChildEnv, e.d.SocketPath(), n))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); line != "opened\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q, %v; want opened", line, err)
	}
	// Root is never refused, however many connections others hold.
	for range 2 * max {
		if _, err := e.c.Info(bg, "vol"); err != nil {
			t.Errorf("root's info while uid 65534 holds connections: %v", err)
		}
	}
	var res trickleResult
	if err := json.NewDecoder(out).Decode(&res); err != nil {
		t.Fatalf("child's result: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	refused := 0
	for i, r := range res {
		switch {
		case strings.HasPrefix(r, "refused: "):
			refused++
			if !strings.Contains(r, `"retry"`) || !strings.Contains(r, "uid 65534") || !strings.Contains(r, "connections") {
				t.Errorf("connection %d refused with %q, want code retry and a message saying why", i, r)
			}
		case r != "ended":
			t.Errorf("connection %d: %s, want closed by the server's read timeouts", i, r)
		}
	}
	if refused == 0 || refused > n-max {
		t.Errorf("%d of %d connections refused, want 1 to %d (cap %d): %q", refused, n, n-max, max, res)
	}
}
