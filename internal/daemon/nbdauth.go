package daemon

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/daxsnap/daxsnap/internal/access"
	"github.com/daxsnap/daxsnap/internal/dm"
	"github.com/daxsnap/daxsnap/internal/export/nbd"
	"github.com/daxsnap/daxsnap/internal/pmem"
	"github.com/daxsnap/daxsnap/internal/snapshots"
)

// Who may use a device over NBD: the owner and mode rule of DAX maps
// (mayAccess), applied to an identity each door establishes:
//
//   - STATE/nbd.sock: the peer's SO_PEERCRED and supplementary groups;
//   - TCP with TLS: the verified client certificate's subject, mapped to
//     a local user by the --tls-authz file, or else its CN read as a
//     user name;
//   - TCP with --nbd-insecure: nobody in particular (an anonymous
//     client), so only the devices' "other" bits apply.
//
// Read permission alone gives a read-only export; without it a device
// is neither listed nor opened. ORIGIN-real and ORIGIN-merge, which
// write past an origin's snapshots, are only ever exported read-only.

// Files of a --tls-creds directory, as qemu-nbd and nbdkit name them.
const (
	tlsCACert     = "ca-cert.pem"
	tlsServerCert = "server-cert.pem"
	tlsServerKey  = "server-key.pem"
)

// nbdIdentity is who an NBD client is for the owner and mode rule.
type nbdIdentity struct {
	peer access.Peer
	who  string // for messages: "uid 1000 (gid 1000, pid 42)"
	hint string // what to do about a refusal
}

// authz is the access rule of every door to a device's data (NBD, FUSE
// files, DAX maps): who a client is, and what the owner and mode of the
// device (or of the region file a map hands out) let it do.
type authz struct {
	mgr     *dm.Manager   // ORIGIN-real and ORIGIN-merge are only read (bypassesCOW)
	devs    *devStates    // the devices' owners
	regions *pmem.Manager // the regions' owners, for map descriptors
	// tlsAuthz maps certificate subjects to users (--tls-authz); nil:
	// a certificate's CN names the user.
	tlsAuthz map[string]string
}

// anonymous is the identity of a client nothing identifies.
var anonymous = access.Peer{PID: -1, UID: access.NoID, GID: access.NoID}

// nbdIdentify says who c is, or why it is nobody the daemon can serve.
func (a *authz) nbdIdentify(c *nbd.Client) (nbdIdentity, error) {
	const fix = "recreate the device with --uid/--gid/--mode that do"
	switch {
	case c.TLS != nil:
		if len(c.TLS.PeerCertificates) == 0 {
			return nbdIdentity{}, errors.New("the TLS client sent no certificate: connect with a client certificate signed by the server's CA (tls-certificates=DIR)")
		}
		cert := c.TLS.PeerCertificates[0]
		subject := cert.Subject.String()
		p, err := a.tlsUser(subject, cert.Subject.CommonName)
		if err != nil {
			return nbdIdentity{}, err
		}
		return nbdIdentity{peer: p, who: fmt.Sprintf("TLS client %q (uid %d)", subject, p.UID),
			hint: fix + ", or map this certificate to a user they allow (serve --tls-authz)"}, nil
	case c.Cred != nil:
		p := access.Peer{PID: c.Cred.PID, UID: c.Cred.UID, GID: c.Cred.GID}
		if p.UID != 0 {
			// Unreadable groups (the process is gone): only the primary gid counts.
			p.Groups, _ = access.Groups(p.PID, p.UID)
		}
		return nbdIdentity{peer: p, who: fmt.Sprintf("uid %d (gid %d, pid %d)", p.UID, p.GID, p.PID),
			hint: fix + ", or connect as a user they allow"}, nil
	}
	return nbdIdentity{peer: anonymous, who: "an anonymous client (plain TCP identifies nobody)",
		hint: "give the device a mode whose other bits allow it (create --mode), or connect through TLS or " + NBDSocketName + ", which identify the client"}, nil
}

// tlsUser maps a verified certificate subject to a local user: by the
// --tls-authz file if there is one, else by reading its CN as a user name.
func (a *authz) tlsUser(subject, cn string) (access.Peer, error) {
	if a.tlsAuthz != nil {
		u, ok := a.tlsAuthz[subject]
		if !ok {
			return access.Peer{}, fmt.Errorf("certificate subject %q is not in the --tls-authz file: add a line \"USER %s\" to it", subject, subject)
		}
		return lookupUser(u)
	}
	if cn == "" {
		return access.Peer{}, fmt.Errorf("certificate subject %q has no CN to read as a user name: give it one, or map the subject with serve --tls-authz", subject)
	}
	if _, err := strconv.ParseUint(cn, 10, 32); err == nil {
		return access.Peer{}, fmt.Errorf("certificate CN %q is a number, not a user name: name a user, or map the subject with serve --tls-authz", cn)
	}
	p, err := lookupUser(cn)
	if err != nil {
		return access.Peer{}, fmt.Errorf("certificate CN %q: %v: name a local user, or map the subject with serve --tls-authz", cn, err)
	}
	return p, nil
}

// lookupUser is user (a name, or a uid in decimal) with its primary and
// supplementary groups; a uid the user database lacks has none.
func lookupUser(name string) (access.Peer, error) {
	p := access.Peer{PID: -1, GID: access.NoID}
	var u *user.User
	var err error
	if id, perr := strconv.ParseUint(name, 10, 32); perr == nil {
		if uint32(id) == access.NoID {
			return p, fmt.Errorf("uid %d is (uid_t)-1, which no process has", id)
		}
		p.UID = uint32(id)
		if u, err = user.LookupId(name); err != nil {
			return p, nil // a bare uid
		}
	} else if u, err = user.Lookup(name); err != nil {
		return p, fmt.Errorf("no user %q", name)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	p.UID = uint32(uid)
	if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
		p.GID = uint32(g)
	}
	if gids, err := u.GroupIds(); err == nil {
		for _, s := range gids {
			if g, err := strconv.ParseUint(s, 10, 32); err == nil {
				p.Groups = append(p.Groups, uint32(g))
			}
		}
	}
	return p, nil
}

// nbdAccess decides what id may do with dev over NBD: nothing (an
// error that says why), read only, or read and write.
func (a *authz) nbdAccess(id nbdIdentity, dev *dm.Device) (readOnly bool, err error) {
	o, self, name := a.devs.owner(dev), uint32(os.Geteuid()), dev.Name()
	if err := mayAccess(o, self, id.peer, id.who, "open", name, access.Read, id.hint); err != nil {
		return false, err
	}
	return a.bypassesCOW(name) || mayAccess(o, self, id.peer, id.who, "write", name, access.Read|access.Write, id.hint) != nil, nil
}

// bypassesCOW reports whether name is the ORIGIN-real or ORIGIN-merge
// of an existing origin: writing it changes the origin under its
// snapshots, which would then no longer hold what they held.
func (a *authz) bypassesCOW(name string) bool {
	for _, suffix := range []string{snapshots.RealSuffix, snapshots.MergeSuffix} {
		if origin, ok := strings.CutSuffix(name, suffix); ok && origin != "" {
			if _, err := a.mgr.Get(origin); err == nil {
				return true
			}
		}
	}
	return false
}

// loadNBDTLS reads a --tls-creds directory: the server's certificate and
// key, and the CA that client certificates must be signed by.
func loadNBDTLS(dir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, tlsServerCert), filepath.Join(dir, tlsServerKey))
	if err != nil {
		return nil, fmt.Errorf("--tls-creds %s: %w: the directory needs %s, %s and %s, as for qemu-nbd and nbdkit", dir, err, tlsCACert, tlsServerCert, tlsServerKey)
	}
	ca, err := os.ReadFile(filepath.Join(dir, tlsCACert))
	if err != nil {
		return nil, fmt.Errorf("--tls-creds %s: %w: client certificates are verified against this CA", dir, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("--tls-creds %s: %s holds no PEM certificate", dir, filepath.Join(dir, tlsCACert))
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// maxAuthzSize bounds a --tls-authz file.
const maxAuthzSize = 1 << 20

// loadAuthz reads a --tls-authz file (see parseAuthz).
func loadAuthz(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--tls-authz: %w", err)
	}
	if len(data) > maxAuthzSize {
		return nil, fmt.Errorf("--tls-authz %s: %d bytes, over the %d allowed", path, len(data), maxAuthzSize)
	}
	m, err := parseAuthz(data)
	if err != nil {
		return nil, fmt.Errorf("--tls-authz %s: %w", path, err)
	}
	return m, nil
}

// parseAuthz reads the lines of a --tls-authz file, "USER SUBJECT": a
// user name or decimal uid, white space, then a certificate subject as
// RFC 4514 writes it (`openssl x509 -noout -subject -nameopt RFC2253`,
// e.g. "CN=alice,O=Example"). Blank lines and lines starting with # are
// skipped. It returns subject -> user.
func parseAuthz(data []byte) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxAuthzSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.IndexAny(line, " \t")
		if i < 0 {
			i = len(line)
		}
		u, subject := line[:i], strings.TrimSpace(line[i:])
		if subject == "" {
			return nil, fmt.Errorf("line %d: %q is not \"USER SUBJECT\" (e.g. \"alice CN=alice,O=Example\")", n, line)
		}
		if !validUser(u) {
			return nil, fmt.Errorf("line %d: %q is neither a user name nor a uid", n, u)
		}
		if !strings.Contains(subject, "=") {
			return nil, fmt.Errorf("line %d: subject %q has no attribute=value: write it as RFC 4514 does (CN=alice,O=Example)", n, subject)
		}
		if prev, dup := m[subject]; dup {
			return nil, fmt.Errorf("line %d: subject %q is mapped again (to %s; before, to %s): map each subject once", n, subject, u, prev)
		}
		m[subject] = u
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// validUser accepts a decimal uid other than (uid_t)-1, or a name as
// useradd takes it.
func validUser(s string) bool {
	if id, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(id) != access.NoID
	}
	if s == "" || len(s) > 256 || s[0] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-$", r)) {
			return false
		}
	}
	return true
}

// listenNBDTCP opens the TCP listener Config.NBDAddr asks for: with TLS
// if --tls-creds is given; plain only with --nbd-insecure, and then only
// on a loopback address. The TLS configuration is nil for plain TCP.
func (e *exports) listenNBDTCP() (net.Listener, *tls.Config, error) {
	cfg := e.cfg
	var conf *tls.Config
	switch {
	case cfg.NBDTLSCreds != "" && cfg.NBDInsecure:
		return nil, nil, errors.New("--tls-creds and --nbd-insecure contradict each other: TCP with credentials is TLS; drop one")
	case cfg.NBDTLSCreds != "":
		c, err := loadNBDTLS(cfg.NBDTLSCreds)
		if err != nil {
			return nil, nil, err
		}
		conf = c
	case !cfg.NBDInsecure:
		return nil, nil, fmt.Errorf("NBD on TCP (--nbd-addr %s) needs TLS: give --tls-creds DIR (%s, %s, %s), "+
			"or --nbd-insecure for plain TCP on a loopback address; local clients can use STATE/%s instead",
			cfg.NBDAddr, tlsCACert, tlsServerCert, tlsServerKey, NBDSocketName)
	}
	l, err := net.Listen("tcp", cfg.NBDAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for NBD on %s: %w: pick another --nbd-addr (or \"\" for none)", cfg.NBDAddr, err)
	}
	if conf == nil {
		if a, ok := l.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
			l.Close()
			return nil, nil, fmt.Errorf("--nbd-insecure on %s (bound to %s): plain NBD is only served on a loopback address such as 127.0.0.1:10809; "+
				"give --tls-creds DIR to serve other interfaces", cfg.NBDAddr, l.Addr())
		}
		e.log.Warn("NBD on plain TCP (--nbd-insecure): no encryption, and clients are anonymous, so they get only what each device's other permission bits allow",
			"addr", l.Addr().String())
	}
	return l, conf, nil
}
