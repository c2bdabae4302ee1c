package access

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/oauth"
	"github.com/claudeflare/claudeflare/proxy"
)

// TLSConfig is the listener's TLS configuration from server.tls_cert and
// server.tls_key, or nil when neither is set (plain HTTP). The files are
// read now, so a bad pair is an error at start; afterwards a changed
// certificate file (a renewal) is picked up at the next handshake, and a
// broken one leaves the previous certificate in use.
//
// The files are looked at during a handshake at most once per
// CertCheckInterval of the clock (TLSClock; time.Now by default).
//
// Serve with tls.NewListener(ln, cfg); NextProtos offers HTTP/2.
func TLSConfig(cfg *config.Config, opts ...TLSOption) (*tls.Config, error) {
	certFile, keyFile := cfg.Server.TLSCert, cfg.Server.TLSKey
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("load TLS certificate: server.tls_cert and server.tls_key must both be set")
	}
	cl := &certLoader{certFile: certFile, keyFile: keyFile, now: time.Now}
	for _, o := range opts {
		o(cl)
	}
	if err := cl.load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: cl.get,
	}, nil
}

// Listener wraps ln in TLS when server.tls_cert and server.tls_key are
// set, and returns the scheme to announce: "https", or "http" with ln
// unchanged.
func Listener(ln net.Listener, cfg *config.Config, opts ...TLSOption) (net.Listener, string, error) {
	tc, err := TLSConfig(cfg, opts...)
	if err != nil {
		return nil, "", err
	}
	if tc == nil {
		return ln, "http", nil
	}
	return tls.NewListener(ln, tc), "https", nil
}

// CertCheckInterval is how often, at most, a handshake looks whether the
// certificate files changed.
const CertCheckInterval = time.Second

// A TLSOption changes how TLSConfig and Listener serve the certificate.
type TLSOption func(*certLoader)

// TLSClock sets the clock that paces the certificate file checks
// (nil = time.Now); tests move it instead of sleeping.
func TLSClock(now func() time.Time) TLSOption {
	return func(c *certLoader) {
		if now != nil {
			c.now = now
		}
	}
}

// certLoader re-reads the certificate pair when either file changes.
type certLoader struct {
	certFile, keyFile string
	now               func() time.Time
	mu                sync.Mutex
	cert              *tls.Certificate
	stamp             string
	checked           time.Time
}

func fileStamp(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			b.WriteString("?;")
			continue
		}
		fmt.Fprintf(&b, "%d:%d;", st.ModTime().UnixNano(), st.Size())
	}
	return b.String()
}

func (c *certLoader) load() error {
	stamp := fileStamp(c.certFile, c.keyFile)
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	c.cert, c.stamp = &cert, stamp
	return nil
}

func (c *certLoader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); now.Sub(c.checked) > CertCheckInterval {
		c.checked = now
		if fileStamp(c.certFile, c.keyFile) != c.stamp {
			c.load() // on error keep serving the previous certificate
		}
	}
	return c.cert, nil
}

// SPKIPin is the pin of a certificate: the base64 SHA-256 of its
// SubjectPublicKeyInfo, the form of upstream.pin_sha256 (and of HPKP).
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// UpstreamTLS is the TLS client configuration for the upstream and the
// token endpoint: certificates always verified against the system roots,
// TLS 1.2 or later, and, with upstream.pin_sha256, connections to the
// upstream's host and to the token endpoint's host refused unless a
// certificate of the verified chain has that public key (pin the leaf, or
// an intermediate both hosts share, to survive renewals). A pin with an
// http:// upstream_url or oauth_token_url is an error: there would be
// nothing to pin, and the tokens would travel in the clear.
func UpstreamTLS(cfg *config.Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	pin := strings.TrimSpace(cfg.Upstream.PinSHA256)
	if pin == "" {
		return tc, nil
	}
	want, err := base64.StdEncoding.DecodeString(pin)
	if err != nil || len(want) != sha256.Size {
		return nil, errors.New("upstream.pin_sha256: must be the base64 SHA-256 of the upstream's public key")
	}
	hosts := map[string]bool{}
	ipHost := false
	tokenURL := cfg.OAuthTokenURL
	if tokenURL == "" {
		tokenURL = oauth.DefaultTokenURL
	}
	for _, e := range []struct{ key, url string }{{"upstream_url", cfg.UpstreamURL}, {"oauth_token_url", tokenURL}} {
		u, err := url.Parse(e.url)
		if err != nil || u.Hostname() == "" {
			return nil, fmt.Errorf("%s: invalid URL %q", e.key, e.url)
		}
		if !strings.EqualFold(u.Scheme, "https") {
			return nil, fmt.Errorf("upstream.pin_sha256 is set but %s is %s://, not https://: a pin needs TLS", e.key, u.Scheme)
		}
		h := strings.ToLower(u.Hostname())
		hosts[h] = true
		ipHost = ipHost || net.ParseIP(h) != nil
	}
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		name := strings.ToLower(cs.ServerName)
		if !hosts[name] && !(name == "" && ipHost) {
			return nil // another host: verified, not pinned
		}
		for _, chain := range cs.VerifiedChains {
			for _, c := range chain {
				sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
				if bytes.Equal(sum[:], want) {
					return nil
				}
			}
		}
		host := name
		if host == "" {
			host = "the upstream"
		}
		return fmt.Errorf("%s: no certificate in the chain matches upstream.pin_sha256", host)
	}
	return tc, nil
}

// UpstreamTransport is the transport to the upstream with UpstreamTLS:
// HTTP/2 when offered, generous idle pools, timeouts on dialing and on the
// response headers only (a stream may run for many minutes).
func UpstreamTransport(cfg *config.Config) (*http.Transport, error) {
	tc, err := UpstreamTLS(cfg)
	if err != nil {
		return nil, err
	}
	return proxy.NewTransport(cfg, tc), nil
}
