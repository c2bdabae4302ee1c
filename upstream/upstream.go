// Package upstream builds the one HTTP transport to the Anthropic API and
// its OAuth token endpoint: certificates always verified, TLS 1.2 or
// later, optionally pinned (upstream.pin_sha256), tuned for long streams.
// The daemon forwards and refreshes through it; the CLI exchanges login
// codes through it.
package upstream

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/oauth"
)

// TLS is the TLS client configuration for the upstream and the
// token endpoint: certificates always verified against the system roots,
// TLS 1.2 or later, and, with upstream.pin_sha256, connections to the
// upstream's host and to the token endpoint's host refused unless a
// certificate of the verified chain has that public key (pin the leaf, or
// an intermediate both hosts share, to survive renewals). A pin with an
// http:// upstream_url or oauth_token_url is an error: there would be
// nothing to pin, and the tokens would travel in the clear.
func TLS(cfg *config.Config) (*tls.Config, error) {
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
		// As TLS names it (its ServerName): no trailing dot.
		h := strings.TrimRight(strings.ToLower(u.Hostname()), ".")
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

// Transport is the transport to the upstream and the token endpoint,
// with TLS: what the daemon forwards and refreshes through, and what the
// CLI's `accounts add` exchanges its code through.
func Transport(cfg *config.Config) (*http.Transport, error) {
	tc, err := TLS(cfg)
	if err != nil {
		return nil, err
	}
	return NewTransport(cfg, tc), nil
}

// Health pings on the HTTP/2 connections to the upstream (and the token
// endpoint). A connection that has read no frame for PingAfterIdle is
// sent a PING; with no answer within PingTimeout it is closed, which
// fails the streams on it (the proxy then fails over or answers) and takes
// it out of the pool. Without them a connection that died silently (a NAT
// or load balancer that dropped its state, a host that vanished) holds its
// streams, and every request the pool sends on it, until TCP gives up,
// minutes later; with them it is noticed within 25 seconds. The peer's
// HTTP/2 layer answers a PING itself, so a model slow to send its next
// token does not trip it, and an idle connection costs one 17-byte frame
// each 15 seconds until IdleConnTimeout closes it. A plain http://
// upstream speaks HTTP/1.1 and gets no pings (TCP keep-alives only).
const (
	PingAfterIdle = 15 * time.Second
	PingTimeout   = 10 * time.Second
)

// NewTransport is the upstream transport (tc nil = Go's verified
// defaults): HTTP/2 when the upstream offers it over TLS, with health
// pings (PingAfterIdle, PingTimeout), generous idle pools, timeouts on
// dialing and on the response headers only (a stream may run for many
// minutes). Every new connection, HTTP/2 or not, goes through tc's
// handshake checks (the pin). Compression is left on: requests go out
// without the client's Accept-Encoding, so the transport asks for gzip
// itself and hands back a decompressed body.
func NewTransport(cfg *config.Config, tc *tls.Config) *http.Transport {
	d := &net.Dialer{Timeout: cfg.Upstream.DialTimeout.Std(), KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:           http.ProxyFromEnvironment,
		DialContext:     d.DialContext,
		TLSClientConfig: tc,
		// A custom dialer or TLS config turns HTTP/2 off unless asked.
		ForceAttemptHTTP2:     true,
		HTTP2:                 &http.HTTP2Config{SendPingTimeout: PingAfterIdle, PingTimeout: PingTimeout},
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: cfg.Upstream.ResponseHeaderTimeout.Std(),
		ExpectContinueTimeout: time.Second,
	}
}
