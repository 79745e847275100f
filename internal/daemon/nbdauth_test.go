package daemon_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daxsnap/daxsnap/internal/daemon"
	"github.com/daxsnap/daxsnap/internal/testutil"
)

const nobody = 65534

// tool runs a client tool as uid (0: as this process) and returns its
// combined output.
func tool(uid uint32, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		cmd.Dir = "/"
		cmd.Env = append(os.Environ(), "HOME=/nonexistent")
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustTool(t *testing.T, uid uint32, name string, args ...string) string {
	t.Helper()
	out, err := tool(uid, name, args...)
	if err != nil {
		t.Fatalf("%s %s (uid %d): %v\n%s", name, strings.Join(args, " "), uid, err, out)
	}
	return out
}

// openToOthers lets other users reach files under dir (not list it).
func openToOthers(dir string) {
	for d := dir; d != "/tmp" && d != "/" && d != "."; d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
}

// nbdAuthEnv is a daemon with three devices on one region: "secret"
// (root, 0600), "shared" (root, 0644) and "own" (uid 65534, 0600).
func nbdAuthEnv(t *testing.T, cfg func(*daemon.Config)) *env {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "nbdinfo", "nbdcopy", "qemu-io", "qemu-img")
	e := newEnvWith(t, cfg)
	openToOthers(e.cfg.StateDir)
	path := e.region("r", 3*mib)
	e.create("secret", "0 2048 linear "+path+" 0")
	e.createOwned("shared", "0 2048 linear "+path+" 2048", 0, 0, "0644")
	e.createOwned("own", "0 2048 linear "+path+" 4096", nobody, nobody, "0600")
	return e
}

type nbdinfoJSON struct {
	Exports []struct {
		Name       string `json:"export-name"`
		ReadOnly   bool   `json:"is_read_only"`
		Descripton string `json:"description"`
	} `json:"exports"`
}

func exportsOf(t *testing.T, out string) map[string]bool {
	t.Helper()
	var info nbdinfoJSON
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	m := map[string]bool{}
	for _, x := range info.Exports {
		m[x.Name] = x.ReadOnly
	}
	return m
}

// checkDoor runs the owner/mode checks through one door: uri(export)
// for libnbd's tools, qemuImg(export) for qemu-img's arguments (the
// one that prints the server's reason).
func checkDoor(t *testing.T, uri func(string) string, qemuImg func(string) []string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "y.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	openToOthers(filepath.Dir(img))
	os.Chmod(filepath.Dir(img), 0o777)

	// uid 65534 sees "shared" (read-only) and "own", never "secret".
	got := exportsOf(t, mustTool(t, nobody, "nbdinfo", "--json", "--list", uri("")))
	if ro, ok := got["shared"]; !ok || !ro {
		t.Errorf("uid 65534 lists %v: want shared, read-only", got)
	}
	if ro, ok := got["own"]; !ok || ro {
		t.Errorf("uid 65534 lists %v: want own, writable", got)
	}
	if _, ok := got["secret"]; ok {
		t.Errorf("uid 65534 lists %v: secret (root, 0600) is listed", got)
	}
	// Opening secret is refused by policy, saying why (nbdinfo 1.14
	// does not print the server's message; qemu-img does).
	out, err := tool(nobody, "nbdinfo", uri("secret"))
	if err == nil {
		t.Errorf("uid 65534 opened secret:\n%s", out)
	}
	out, err = tool(nobody, "qemu-img", append([]string{"info"}, qemuImg("secret")...)...)
	if err == nil || !strings.Contains(out, "uid 65534") || !strings.Contains(out, "may not open secret") || !strings.Contains(out, "mode 0600") {
		t.Errorf("uid 65534 opened secret, or the refusal does not say why: %v\n%s", err, out)
	}
	out, err = tool(nobody, "nbdcopy", uri("secret"), filepath.Join(filepath.Dir(img), "stolen.img"))
	if err == nil {
		t.Errorf("uid 65534 copied secret out:\n%s", out)
	}
	out, err = tool(nobody, "nbdcopy", "--flush", img, uri("secret"))
	if err == nil {
		t.Errorf("uid 65534 wrote secret:\n%s", out)
	}
	// shared reads, but writes fail.
	mustTool(t, nobody, "nbdcopy", uri("shared"), filepath.Join(filepath.Dir(img), "copy.img"))
	out, err = tool(nobody, "nbdcopy", "--flush", img, uri("shared"))
	if err == nil {
		t.Errorf("uid 65534 wrote the 0644 device shared:\n%s", out)
	}
	// own is its own to write.
	mustTool(t, nobody, "nbdcopy", "--flush", img, uri("own"))
}

// Ensure that STATE/nbd.sock authorizes every export by SO_PEERCRED with
// the DAX maps' owner/mode rule: uid 65534 neither lists nor opens a
// root 0600 device, gets a 0644 one read-only (writes EPERM), its own
// device read-write; root gets everything.
func TestDaemon_nbdUnixAuthorizes(t *testing.T) {
	e := nbdAuthEnv(t, nil)
	sock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	uri := func(name string) string { return "nbd+unix:///" + name + "?socket=" + sock }
	checkDoor(t, uri, func(name string) []string { return []string{uri(name)} })

	// qemu-io's write on the read-only export fails with EPERM.
	out, err := tool(nobody, "qemu-io", "-f", "raw", "-c", "write -P 1 0 512", uri("shared"))
	if err == nil || !strings.Contains(out, "Permission denied") && !strings.Contains(out, "read-only") && !strings.Contains(out, "read only") {
		t.Errorf("uid 65534 wrote shared with qemu-io:\n%s", out)
	}
	// Root gets everything read-write.
	got := exportsOf(t, mustTool(t, 0, "nbdinfo", "--json", "--list", uri("")))
	for _, n := range []string{"secret", "shared", "own"} {
		if ro, ok := got[n]; !ok || ro {
			t.Errorf("root lists %v: want %s writable", got, n)
		}
	}
}

// Ensure that ORIGIN-real and ORIGIN-merge, which write past an origin's
// snapshots, are exported read-only even to root.
func TestDaemon_nbdRealReadOnly(t *testing.T) {
	e := nbdAuthEnv(t, nil)
	path := e.region("o", 4*mib)
	e.create("vol", linear(path, 4096))
	e.snap("vol", "s1")
	sock := filepath.Join(e.cfg.StateDir, daemon.NBDSocketName)
	uri := func(name string) string { return "nbd+unix:///" + name + "?socket=" + sock }
	got := exportsOf(t, mustTool(t, 0, "nbdinfo", "--json", "--list", uri("")))
	if ro, ok := got["vol-real"]; !ok || !ro {
		t.Fatalf("root lists %v: want vol-real read-only", got)
	}
	img := filepath.Join(t.TempDir(), "y.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o644)
	if out, err := tool(0, "nbdcopy", "--flush", img, uri("vol-real")); err == nil {
		t.Fatalf("nbdcopy rewrote vol-real under its snapshot:\n%s", out)
	}
	out, err := tool(0, "qemu-io", "-f", "raw", "-c", "write -P 1 0 512", uri("vol-real"))
	if err == nil || !strings.Contains(out, "Permission denied") && !strings.Contains(out, "read-only") && !strings.Contains(out, "read only") {
		t.Fatalf("qemu-io wrote vol-real:\n%s", out)
	}
	// The origin itself stays writable.
	if ro, ok := got["vol"]; !ok || ro {
		t.Fatalf("root lists %v: want vol writable", got)
	}
}

// Ensure that NBD on TCP is off unless asked, needs TLS unless
// --nbd-insecure, and that plain TCP is loopback only.
func TestDaemon_nbdTCPNeedsTLS(t *testing.T) {
	testutil.RequireRoot(t)
	state := t.TempDir()
	start := func(cfg daemon.Config) error {
		cfg.StateDir, cfg.PmemDir = state, pmemDir(t)
		d, err := daemon.Start(cfg)
		if err == nil {
			d.Shutdown(context.Background())
		}
		return err
	}
	if err := start(daemon.Config{NBDAddr: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "needs TLS") {
		t.Errorf("plain TCP without --nbd-insecure: %v", err)
	}
	if err := start(daemon.Config{NBDAddr: ":0", NBDInsecure: true}); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("plain TCP on every interface: %v", err)
	}
	if err := start(daemon.Config{NBDAddr: "127.0.0.1:0", NBDTLSCreds: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "server-cert.pem") {
		t.Errorf("empty --tls-creds: %v", err)
	}
	if err := start(daemon.Config{NBDInsecure: true}); err == nil {
		t.Error("--nbd-insecure without --nbd-addr started")
	}
	logs := &testutil.LogBuffer{}
	cfg := testConfig(t, logs)
	cfg.StateDir = state
	d, err := daemon.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range d.NBDAddrs() {
		if a.Network() == "tcp" {
			t.Errorf("NBD on TCP by default: %v", a)
		}
	}
	d.Shutdown(context.Background())
}

// Ensure that with --nbd-insecure, plain TCP clients are anonymous: only
// the devices' other bits apply, and a warning is logged.
func TestDaemon_nbdInsecureAnonymous(t *testing.T) {
	e := nbdAuthEnv(t, func(c *daemon.Config) { c.NBDAddr, c.NBDInsecure = "127.0.0.1:0", true })
	addr := tcpAddr(t, e)
	if !strings.Contains(e.logs.String(), "--nbd-insecure") {
		t.Errorf("no warning for plain TCP:\n%s", e.logs)
	}
	got := exportsOf(t, mustTool(t, 0, "nbdinfo", "--json", "--list", "nbd://"+addr))
	if ro, ok := got["shared"]; len(got) != 1 || !ok || !ro {
		t.Errorf("anonymous TCP client (even if root) lists %v: want only shared, read-only", got)
	}
	if out, err := tool(0, "qemu-img", "info", "nbd://"+addr+"/secret"); err == nil || !strings.Contains(out, "anonymous") {
		t.Errorf("anonymous client opened secret: %v\n%s", err, out)
	}
}

func tcpAddr(t *testing.T, e *env) string {
	t.Helper()
	for _, a := range e.d.NBDAddrs() {
		if a.Network() == "tcp" {
			return a.String()
		}
	}
	t.Fatal("no TCP listener")
	return ""
}

// pki is a CA and certificates signed by it, written as qemu and libnbd
// read them.
type pki struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pem  []byte
}

func newPKI(t *testing.T, cn string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{key: key, cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

var serial int64 = 1

// issue writes DIR/ca-cert.pem, DIR/PREFIX-cert.pem and DIR/PREFIX-key.pem
// for a leaf with subject (server: for 127.0.0.1 and localhost).
func (p *pki) issue(t *testing.T, dir, prefix string, subject pkix.Name) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if prefix == "server" {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(dir, 0o755)
	for name, data := range map[string][]byte{
		"ca-cert.pem":        p.pem,
		prefix + "-cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		prefix + "-key.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// tlsEnv is nbdAuthEnv serving TLS on TCP with certificates in
// dir/server; client directories for subjects CN=alice (uid 65534 by the
// authz file), CN=admin (root) and one signed by another CA.
func tlsEnv(t *testing.T) (e *env, dir string) {
	t.Helper()
	dir = t.TempDir()
	openToOthers(dir)
	os.Chmod(dir, 0o755)
	ca := newPKI(t, "daxsnap test CA")
	ca.issue(t, filepath.Join(dir, "server"), "server", pkix.Name{CommonName: "localhost"})
	ca.issue(t, filepath.Join(dir, "alice"), "client", pkix.Name{CommonName: "alice", Organization: []string{"Example"}})
	ca.issue(t, filepath.Join(dir, "admin"), "client", pkix.Name{CommonName: "admin"})
	ca.issue(t, filepath.Join(dir, "stranger"), "client", pkix.Name{CommonName: "stranger"})
	ca.issue(t, filepath.Join(dir, "nobody"), "client", pkix.Name{CommonName: "nobody"})
	newPKI(t, "another CA").issue(t, filepath.Join(dir, "forged"), "client", pkix.Name{CommonName: "admin"})
	authz := filepath.Join(dir, "authz")
	os.WriteFile(authz, []byte("# who is who\n65534 CN=alice,O=Example\nroot CN=admin\n"), 0o644)
	e = nbdAuthEnv(t, func(c *daemon.Config) {
		c.NBDAddr, c.NBDTLSCreds, c.NBDTLSAuthz = "127.0.0.1:0", filepath.Join(dir, "server"), authz
	})
	return e, dir
}

// Ensure that NBD on TCP with --tls-creds requires STARTTLS and a client
// certificate from the CA, maps its subject to a user through the authz
// file and then applies the owner/mode rule, with nbdinfo and nbdcopy
// (nbds:// URIs), qemu-img and qemu-io (--object tls-creds-x509).
func TestDaemon_nbdTLS(t *testing.T) {
	e, dir := tlsEnv(t)
	addr := tcpAddr(t, e)
	nbds := func(who string) func(string) string {
		return func(name string) string {
			return "nbds://" + addr + "/" + name + "?tls-certificates=" + filepath.Join(dir, who)
		}
	}
	obj := func(who string) string {
		return "tls-creds-x509,id=tls0,endpoint=client,dir=" + filepath.Join(dir, who)
	}
	opts := "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=" + addr[strings.LastIndex(addr, ":")+1:] + ",tls-creds=tls0,export="
	qemu := func(who string) func(string) []string {
		return func(name string) []string { return []string{"--object", obj(who), "--image-opts", opts + name} }
	}
	// alice is uid 65534 by the authz file.
	checkDoor(t, nbds("alice"), qemu("alice"))

	// admin is root: everything, read-write.
	got := exportsOf(t, mustTool(t, 0, "nbdinfo", "--json", "--list", nbds("admin")("")))
	if ro, ok := got["secret"]; !ok || ro {
		t.Errorf("admin lists %v: want secret writable", got)
	}
	// A subject the authz file does not name gets nothing.
	if out, err := tool(0, "qemu-img", append([]string{"info"}, qemu("stranger")("secret")...)...); err == nil || !strings.Contains(out, "tls-authz") {
		t.Errorf("unmapped subject opened secret: %v\n%s", err, out)
	}
	// A certificate from another CA fails the handshake.
	if out, err := tool(0, "nbdinfo", nbds("forged")("secret")); err == nil {
		t.Errorf("a certificate from another CA opened secret:\n%s", out)
	}
	// Plain NBD on the TLS port is refused.
	if out, err := tool(0, "nbdinfo", "nbd://"+addr+"/shared"); err == nil {
		t.Errorf("plain NBD on the TLS port opened shared:\n%s", out)
	}

	// qemu as admin: write, then read back.
	mustTool(t, 0, "qemu-io", "--object", obj("admin"), "--image-opts", "-c", "write -P 0x3c 0 4096", opts+"secret")
	if out := mustTool(t, 0, "qemu-io", "--object", obj("admin"), "--image-opts", "-c", "read -P 0x3c 0 4096", opts+"secret"); strings.Contains(out, "Pattern verification failed") {
		t.Errorf("qemu-io read back:\n%s", out)
	}
	if out := mustTool(t, 0, "qemu-img", "info", "--object", obj("admin"), "--image-opts", opts+"secret"); !strings.Contains(out, "1 MiB") {
		t.Errorf("qemu-img info:\n%s", out)
	}
	// qemu as alice (uid 65534): secret refused, shared read-only.
	if out, err := tool(nobody, "qemu-img", "info", "--object", obj("alice"), "--image-opts", opts+"secret"); err == nil {
		t.Errorf("qemu-img as alice opened secret:\n%s", out)
	}
	out, err := tool(nobody, "qemu-io", "--object", obj("alice"), "--image-opts", "-c", "write -P 1 0 512", opts+"shared")
	if err == nil || !strings.Contains(out, "Permission denied") && !strings.Contains(out, "read-only") && !strings.Contains(out, "read only") {
		t.Errorf("qemu-io as alice wrote shared:\n%s", out)
	}
}

// Ensure that without --tls-authz a certificate's CN names the user.
func TestDaemon_nbdTLSCommonName(t *testing.T) {
	dir := t.TempDir()
	openToOthers(dir)
	os.Chmod(dir, 0o755)
	ca := newPKI(t, "daxsnap test CA")
	ca.issue(t, filepath.Join(dir, "server"), "server", pkix.Name{CommonName: "localhost"})
	ca.issue(t, filepath.Join(dir, "nobody"), "client", pkix.Name{CommonName: "nobody"})
	ca.issue(t, filepath.Join(dir, "ghost"), "client", pkix.Name{CommonName: "no-such-user-here"})
	e := nbdAuthEnv(t, func(c *daemon.Config) { c.NBDAddr, c.NBDTLSCreds = "127.0.0.1:0", filepath.Join(dir, "server") })
	addr := tcpAddr(t, e)
	uri := func(who, name string) string {
		return "nbds://" + addr + "/" + name + "?tls-certificates=" + filepath.Join(dir, who)
	}
	got := exportsOf(t, mustTool(t, 0, "nbdinfo", "--json", "--list", uri("nobody", "")))
	if _, ok := got["secret"]; ok || len(got) != 2 {
		t.Errorf("CN=nobody lists %v: want shared and own", got)
	}
	if out, err := tool(0, "nbdinfo", uri("ghost", "shared")); err == nil {
		t.Errorf("a CN that names no user opened shared:\n%s", out)
	}
	port := addr[strings.LastIndex(addr, ":")+1:]
	if out, err := tool(0, "qemu-img", "info", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+filepath.Join(dir, "ghost"), "--image-opts",
		"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port="+port+",tls-creds=tls0,export=shared"); err == nil || !strings.Contains(out, "no-such-user-here") {
		t.Errorf("a CN that names no user opened shared: %v\n%s", err, out)
	}
}
