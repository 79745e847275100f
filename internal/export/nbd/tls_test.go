package nbd

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// testPKI is a CA with a server and a client certificate, as tls
// configurations for each end.
type testPKI struct{ server, client *tls.Config }

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	leaf := func(n int64, cn string, usage x509.ExtKeyUsage) tls.Certificate {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	return testPKI{
		server: &tls.Config{Certificates: []tls.Certificate{leaf(2, "server", x509.ExtKeyUsageServerAuth)},
			ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert},
		client: &tls.Config{Certificates: []tls.Certificate{leaf(3, "alice", x509.ExtKeyUsageClientAuth)},
			RootCAs: pool, ServerName: "127.0.0.1"},
	}
}

// startTLSServer serves exp on a TCP listener that requires TLS.
func startTLSServer(t *testing.T, exp *testExports, conf *tls.Config) string {
	t.Helper()
	srv := NewServer(exp, Options{Logger: discardLogger()})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.ServeTLS(l, conf); err != ErrServerClosed {
			t.Errorf("ServeTLS = %v, want ErrServerClosed", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		wg.Wait()
		exp.waitReleased(t)
	})
	return l.Addr().String()
}

// startTLS negotiates STARTTLS and moves c onto the TLS session.
func (c *rawClient) startTLS(conf *tls.Config) error {
	c.t.Helper()
	c.expectOpt(optStartTLS, nil, repAck)
	tc := tls.Client(c.nc, conf)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.nc, c.br = tc, bufio.NewReader(tc)
	return nil
}

// Ensure that a listener that requires TLS answers every option but
// STARTTLS and ABORT with NBD_REP_ERR_TLS_REQD, serves after STARTTLS
// with the client's verified certificate in Client.TLS, and refuses a
// second STARTTLS.
func TestTLS_required(t *testing.T) {
	pki := newTestPKI(t)
	exp := newExports().add(Export{Name: "disk", Backend: newMem(1 << 20)})
	addr := startTLSServer(t, exp, pki.server)

	c := dialRaw(t, "tcp", addr)
	c.clientFlags(clientFixedNewstyle | clientNoZeroes)
	c.expectOpt(optList, nil, repErrTLSReqd)
	c.expectOpt(optInfo, appendInfoRequest(nil, infoRequest{name: "disk"}), repErrTLSReqd)
	c.expectOpt(optGo, appendInfoRequest(nil, infoRequest{name: "disk"}), repErrTLSReqd)
	c.expectOpt(optStructuredReply, nil, repErrTLSReqd)
	c.expectOpt(optStartTLS, []byte{1}, repErrInvalid)
	if err := c.startTLS(pki.client); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	rs := c.expectOpt(optList, nil, repAck)
	if len(rs) != 2 || !strings.Contains(string(rs[0].data), "disk") {
		t.Fatalf("LIST inside TLS: %v", rs)
	}
	cl := exp.client.Load()
	if cl == nil || cl.TLS == nil || len(cl.TLS.PeerCertificates) == 0 || cl.TLS.PeerCertificates[0].Subject.CommonName != "alice" || cl.Network != "tcp" {
		t.Fatalf("Exports saw client %+v, want the TLS session with alice's certificate", cl)
	}
	c.expectOpt(optStartTLS, nil, repErrInvalid)
	c.expectOpt(optGo, appendInfoRequest(nil, infoRequest{name: "disk"}), repAck)
	rep := c.do(request{typ: cmdRead, cookie: 1, length: 4096}, nil)
	if rep.errno != 0 || len(rep.data) != 4096 {
		t.Fatalf("read over TLS: %v", rep)
	}
}

// Ensure that EXPORT_NAME before STARTTLS on a TLS listener hangs up
// (the option has no error reply), and that a client certificate from
// another CA fails the handshake.
func TestTLS_refusals(t *testing.T) {
	pki := newTestPKI(t)
	exp := newExports().add(Export{Name: "disk", Backend: newMem(1 << 20)})
	addr := startTLSServer(t, exp, pki.server)

	c := dialRaw(t, "tcp", addr)
	c.clientFlags(clientFixedNewstyle | clientNoZeroes)
	c.sendOpt(optExportName, []byte("disk"))
	c.expectClosed()

	other := newTestPKI(t)
	forged := pki.client.Clone()
	forged.Certificates = other.client.Certificates
	c = dialRaw(t, "tcp", addr)
	c.clientFlags(clientFixedNewstyle | clientNoZeroes)
	if err := c.startTLS(forged); err == nil {
		// TLS 1.3 clients learn of the refusal at their first read.
		if _, err := c.br.ReadByte(); err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	}
	if exp.opened.Load() != 0 {
		t.Fatal("an export was opened")
	}
}

// Ensure that a *RefusedError from Open is NBD_REP_ERR_POLICY with its
// text, and that a unix socket client's SO_PEERCRED reaches Exports.
func TestHandshake_refusedAndPeerCred(t *testing.T) {
	m := newMem(1 << 20)
	exp := newExports().add(Export{Name: "disk", Backend: m})
	exp.refuse = map[string]string{"secret": "uid 1000 may not open secret"}
	ts := startServer(t, exp, Options{})
	c := dialRaw(t, "unix", ts.unix)
	c.clientFlags(clientFixedNewstyle | clientNoZeroes)
	for _, opt := range []uint32{optInfo, optGo} {
		rs := c.expectOpt(opt, appendInfoRequest(nil, infoRequest{name: "secret"}), repErrPolicy)
		if !strings.Contains(string(rs[0].data), "uid 1000 may not open secret") {
			t.Fatalf("%s refusal says %q", optName(opt), rs[0].data)
		}
	}
	cl := exp.client.Load()
	if cl == nil || cl.Cred == nil || cl.Cred.UID != uint32(os.Getuid()) || cl.Cred.PID != os.Getpid() || cl.Network != "unix" || cl.TLS != nil {
		t.Fatalf("Exports saw client %+v, want this process's credentials", cl)
	}
	// STARTTLS on a plain listener is unsupported.
	c.expectOpt(optStartTLS, nil, repErrUnsup)
	c.expectOpt(optGo, appendInfoRequest(nil, infoRequest{name: "disk"}), repAck)
}
