package daemon_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/daxsnap/daxsnap/internal/api"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

// readChildEnv makes the test binary read device data through the
// control API (as whatever uid runs it): "SOCKET NAME...".
const readChildEnv = "DAXSNAP_TEST_READ_DATA"

// readChild reads 512 bytes of each named device and prints, per name,
// "" or the error's code and message, as JSON.
func readChild(arg string) int {
	f := strings.Fields(arg)
	c := api.NewClient(f[0])
	res := map[string]string{}
	for _, name := range f[1:] {
		_, err := c.ReadData(name, 0, 512)
		switch err := err.(type) {
		case nil:
			res[name] = ""
		case *api.Error:
			res[name] = err.Code + ": " + err.Message
		default:
			res[name] = err.Error()
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
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
	if _, err := e.c.ReadData("secret", 0, 512); err != nil {
		t.Errorf("root reading secret: %v", err)
	}
}
