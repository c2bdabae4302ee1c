package upstream_test

import (
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/testcert"
	"github.com/claudeflare/claudeflare/upstream"
)

func TestUpstreamPin(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream") }))
	defer up.Close()
	leaf := up.Certificate()
	pool := x509.NewCertPool()
	pool.AddCert(leaf)

	get := func(pin string) error {
		t.Helper()
		cfg := config.Default()
		cfg.UpstreamURL = up.URL
		cfg.Upstream.PinSHA256 = pin
		tr, err := upstream.Transport(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		tr.TLSClientConfig.RootCAs = pool
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(up.URL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get(""); err != nil {
		t.Fatalf("no pin: %v", err)
	}
	if err := get(testcert.SPKIPin(leaf)); err != nil {
		t.Fatalf("matching pin: %v", err)
	}
	err := get("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	if err == nil || !strings.Contains(err.Error(), "pin_sha256") {
		t.Fatalf("wrong pin: %v", err)
	}

	// Verification is never skipped: an unknown CA fails, pin or not.
	cfg := config.Default()
	cfg.UpstreamURL = up.URL
	cfg.Upstream.PinSHA256 = testcert.SPKIPin(leaf)
	tr, err := upstream.Transport(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tr.TLSClientConfig.InsecureSkipVerify {
		t.Fatal("InsecureSkipVerify set")
	}
	if resp, err := (&http.Client{Transport: tr}).Get(up.URL); err == nil {
		resp.Body.Close()
		t.Fatal("an unverifiable upstream was accepted because its pin matched")
	}

	cfg.Upstream.PinSHA256 = "not base64"
	if _, err := upstream.Transport(&cfg); err == nil {
		t.Fatal("a malformed pin was accepted")
	}
}
