package access

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/config"
)

// policy is the part of the config the guard applies; swapped whole on
// reload.
type policy struct {
	allow         []netip.Prefix // empty: every address
	origins       map[string]bool
	anyOrigin     bool
	rpm           int
	streams       int
	metricsPublic bool
	bodyTimeout   time.Duration    // server.body_read_timeout
	redactors     []*regexp.Regexp // log.redact, for payloads the API answers
}

func newPolicy(cfg *config.Config) (*policy, error) {
	p := &policy{
		origins:       map[string]bool{},
		rpm:           cfg.Limits.RequestsPerMinute,
		streams:       cfg.Limits.ConcurrentStreams,
		metricsPublic: cfg.Metrics.Public,
		bodyTimeout:   cfg.Server.BodyReadTimeout.Std(),
		redactors:     cfg.Redactors(),
	}
	for _, a := range cfg.Server.AllowIPs {
		pfx, err := netip.ParsePrefix(a)
		if err != nil {
			addr, aerr := netip.ParseAddr(a)
			if aerr != nil {
				return nil, fmt.Errorf("server.allow_ips: invalid IP or CIDR %q", a)
			}
			addr = addr.Unmap()
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		p.allow = append(p.allow, pfx.Masked())
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			p.anyOrigin = true
			continue
		}
		n, ok := normalizeOrigin(o)
		if !ok {
			return nil, fmt.Errorf("allowed_origins: invalid origin %q", o)
		}
		p.origins[n] = true
	}
	return p, nil
}

// addrAllowed applies server.allow_ips.
func (p *policy) addrAllowed(a netip.Addr) bool {
	if len(p.allow) == 0 {
		return true
	}
	if !a.IsValid() {
		return false
	}
	for _, pfx := range p.allow {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// originListed reports whether an Origin header is in ALLOWED_ORIGINS.
// "*" counts only when keysExist: a keyless proxy trusts its loopback
// clients, and a browser page from anywhere must not ride on that.
func (p *policy) originListed(origin string, keysExist bool) bool {
	if p.anyOrigin && keysExist {
		return true
	}
	n, ok := normalizeOrigin(origin)
	return ok && p.origins[n]
}

// normalizeOrigin lower-cases scheme and host and drops a default port
// and a trailing slash: "HTTPS://Example.com:443/" -> "https://example.com".
func normalizeOrigin(o string) (string, bool) {
	u, err := url.Parse(strings.TrimSpace(o))
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host, true
}

// remoteAddr is the client's IP address (IPv4-mapped addresses unmapped);
// invalid when RemoteAddr is not an IP. X-Forwarded-For is never trusted.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err == nil {
		return ap.Addr().Unmap()
	}
	a, err := netip.ParseAddr(r.RemoteAddr)
	if err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}

// loopbackHost reports whether a Host header (or an origin's host) names
// this machine: "localhost", "*.localhost" or a loopback IP.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// ipHost reports whether a Host header is an IP literal or a loopback
// name (or absent, as HTTP/1.0 allows): what a client of a keyless,
// loopback-only proxy sends. A DNS name there is what a DNS-rebinding web
// page would send.
func ipHost(hostport string) bool {
	if hostport == "" || loopbackHost(hostport) {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	_, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil
}

// sameLoopbackOrigin reports whether a browser Origin is this server
// itself, reached by a loopback name: a page served by claudeflare.
func sameLoopbackOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return strings.EqualFold(u.Scheme, scheme) && strings.EqualFold(u.Host, r.Host) && loopbackHost(u.Host)
}
