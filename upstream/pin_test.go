package upstream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/testcert"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/upstream"
)

// upstream.pin_sha256 covers the token endpoint too: a token endpoint
// whose key is not the pinned one never gets the refresh token.
func TestPinCoversTokenEndpoint(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream") }))
	defer up.Close()

	// The token endpoint: another host name (localhost), another key.
	certFile, keyFile, tokCert := testcert.Write(t, t.TempDir())
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	var body atomic.Value
	tok := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		b, _ := io.ReadAll(r.Body)
		body.Store(string(b))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		io.WriteString(w, `{"error":"invalid_grant"}`)
	}))
	tok.TLS = &tls.Config{Certificates: []tls.Certificate{kp}}
	tok.StartTLS()
	defer tok.Close()
	tokenURL := strings.Replace(tok.URL, "127.0.0.1", "localhost", 1) + "/v1/oauth/token"

	pool := x509.NewCertPool()
	pool.AddCert(up.Certificate())
	pool.AddCert(tokCert)
	refresh := func(pin string) error {
		t.Helper()
		cfg := config.Default()
		cfg.UpstreamURL = up.URL
		cfg.OAuthTokenURL = tokenURL
		cfg.Upstream.PinSHA256 = pin
		tr, err := upstream.Transport(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		tr.TLSClientConfig.RootCAs = pool
		defer tr.CloseIdleConnections()
		c := &oauth.Client{TokenURL: cfg.OAuthTokenURL, HTTP: &http.Client{Transport: tr}}
		_, err = c.Refresh(context.Background(), "rt-do-not-leak-0123456789")
		return err
	}

	// Pinned to the upstream's key: the token endpoint's handshake fails
	// and nothing is sent.
	err = refresh(testcert.SPKIPin(up.Certificate()))
	if err == nil || !strings.Contains(err.Error(), "pin_sha256") {
		t.Fatalf("refresh with a token endpoint off the pin: %v", err)
	}
	if strings.Contains(err.Error(), "rt-do-not-leak") {
		t.Fatalf("the error quotes the refresh token: %v", err)
	}
	if n := got.Load(); n != 0 {
		t.Fatalf("the token endpoint got %d requests (%v) despite the pin", n, body.Load())
	}

	// Pinned to the token endpoint's key, it is reached (and answers).
	err = refresh(testcert.SPKIPin(tokCert))
	if !errors.Is(err, oauth.ErrInvalidGrant) || got.Load() != 1 {
		t.Fatalf("refresh with the token endpoint's own pin: %v (%d requests)", err, got.Load())
	}
}

// A pin with a cleartext upstream or token URL is refused when the
// transport is built (at daemon start), naming the setting.
func TestPinNeedsHTTPS(t *testing.T) {
	for _, tc := range []struct{ up, tok, key string }{
		{"http://127.0.0.1:8080", "https://platform.claude.com/v1/oauth/token", "upstream_url"},
		{"https://api.anthropic.com", "http://127.0.0.1:9/v1/oauth/token", "oauth_token_url"},
	} {
		cfg := config.Default()
		cfg.UpstreamURL, cfg.OAuthTokenURL = tc.up, tc.tok
		cfg.Upstream.PinSHA256 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
		_, err := upstream.Transport(&cfg)
		if err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), "pin_sha256") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("pin with %s over http: %v", tc.key, err)
		}
		cfg.Upstream.PinSHA256 = ""
		if _, err := upstream.Transport(&cfg); err != nil {
			t.Fatalf("no pin, %s over http: %v", tc.key, err)
		}
	}
}

// A host written with its trailing dot (localhost.) is the same host to
// TLS, which sends it without the dot: the pin covers it too.
func TestPinCoversHostWithTrailingDot(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream") }))
	defer up.Close()
	certFile, keyFile, tokCert := testcert.Write(t, t.TempDir())
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	tok := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		w.WriteHeader(400)
	}))
	tok.TLS = &tls.Config{Certificates: []tls.Certificate{kp}}
	tok.StartTLS()
	defer tok.Close()

	cfg := config.Default()
	cfg.UpstreamURL = up.URL
	cfg.OAuthTokenURL = strings.Replace(tok.URL, "127.0.0.1", "localhost.", 1) + "/v1/oauth/token"
	cfg.Upstream.PinSHA256 = testcert.SPKIPin(up.Certificate())
	tr, err := upstream.Transport(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(up.Certificate())
	pool.AddCert(tokCert)
	tr.TLSClientConfig.RootCAs = pool
	dial := tr.DialContext // the resolver here may not know localhost.
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dial(ctx, network, strings.Replace(addr, "localhost.", "127.0.0.1", 1))
	}
	defer tr.CloseIdleConnections()
	c := &oauth.Client{TokenURL: cfg.OAuthTokenURL, HTTP: &http.Client{Transport: tr}}
	_, err = c.Refresh(context.Background(), "rt-do-not-leak-0123456789")
	if err == nil || !strings.Contains(err.Error(), "pin_sha256") {
		t.Fatalf("refresh with a token endpoint (trailing dot) off the pin: %v", err)
	}
	if n := got.Load(); n != 0 {
		t.Fatalf("the token endpoint got %d requests despite the pin", n)
	}
}
