package access

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/claudeflare/claudeflare/config"
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
