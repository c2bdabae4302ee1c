package access_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/testcert"
	"github.com/claudeflare/claudeflare/internal/testutil"
)

// writeCert makes a self-signed certificate for 127.0.0.1 and writes the
// PEM pair into dir.
func writeCert(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	return testcert.Write(t, dir)
}

// serves makes a fresh TLS connection to addr trusting only cert and
// reports whether the handshake and a request succeed.
func serves(addr string, cert *x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("https://" + addr + "/health")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func modTime(t *testing.T, path string) time.Time {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.ModTime()
}

func TestHTTPSServed(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, cert := writeCert(t, dir)
	cfg := config.Default()
	if tc, err := access.TLSConfig(&cfg); tc != nil || err != nil {
		t.Fatalf("no cert configured: %v %v", tc, err)
	}
	if _, scheme, err := access.Listener(nil, &cfg); scheme != "http" || err != nil {
		t.Fatalf("no cert configured: %q %v", scheme, err)
	}
	cfg.Server.TLSCert, cfg.Server.TLSKey = certFile, keyFile
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewClock(time.Now())
	ln, scheme, err := access.Listener(raw, &cfg, access.TLSClock(clock.Now))
	if err != nil || scheme != "https" {
		t.Fatalf("listener: %q %v", scheme, err)
	}
	// The guard in front, as in the daemon.
	h := newHarness(t, nil)
	srv := &http.Server{Handler: h.g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			t.Error("not TLS")
		}
		io.WriteString(w, r.Proto)
	})), ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)} // refused handshakes are expected
	go srv.Serve(ln)
	defer srv.Close()

	pool := x509.NewCertPool()
	pool.AddCert(cert)
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}
		c := &http.Client{Transport: tr}
		resp, err := c.Get("https://" + ln.Addr().String() + "/health")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "HTTP/1.1"
		if h2 {
			want = "HTTP/2.0"
		}
		if string(b) != want {
			t.Fatalf("served %s, want %s", b, want)
		}
		tr.CloseIdleConnections()
	}
	// Plain HTTP to the TLS port fails.
	resp, err := http.Get("http://" + ln.Addr().String() + "/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200 on the TLS port")
		}
	}

	// A renewed certificate is served without a restart, once the check
	// interval has passed on the listener's clock, and not before.
	renewed := modTime(t, certFile).Add(2 * time.Second) // a renewal comes later
	_, _, cert2 := writeCert(t, dir)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, renewed, renewed); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(access.CertCheckInterval - time.Millisecond)
	if err := serves(ln.Addr().String(), cert); err != nil {
		t.Fatalf("the renewed certificate replaced the old one before the check interval: %v", err)
	}
	if err := serves(ln.Addr().String(), cert2); err == nil {
		t.Fatal("the renewed certificate was served before the check interval")
	}
	clock.Add(2 * time.Millisecond)
	if err := serves(ln.Addr().String(), cert2); err != nil {
		t.Fatalf("renewed certificate not served after the check interval: %v", err)
	}
	if err := serves(ln.Addr().String(), cert); err == nil {
		t.Fatal("the old certificate is still served after the renewal was picked up")
	}

	// A broken renewal leaves the last good certificate in use.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	broken := renewed.Add(2 * time.Second)
	if err := os.Chtimes(certFile, broken, broken); err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * access.CertCheckInterval)
	if err := serves(ln.Addr().String(), cert2); err != nil {
		t.Fatalf("a broken certificate file replaced the good one: %v", err)
	}

	cfg.Server.TLSKey = filepath.Join(dir, "missing.pem")
	if _, err := access.TLSConfig(&cfg); err == nil {
		t.Fatal("a missing key file was accepted")
	}
}
