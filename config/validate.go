package config

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// problem is a validation failure of one key. alt, when set, words the
// same failure for another key, used when only that key was set by the user.
type problem struct {
	key, msg string
	alt      *problem
}

// Validate checks c as Load does and compiles Log.Redact for Redactors.
// Its errors are *Error values naming the key but no file or variable.
func (c *Config) Validate() error {
	if p := c.validate(); p != nil {
		return &Error{Key: p.key, Msg: p.msg}
	}
	return nil
}

// validate returns the first problem of c, in key order, or nil. On
// success it has compiled the redactors.
func (c *Config) validate() *problem {
	for _, check := range []func() *problem{c.validateTop, c.validateServer, c.validateLog, c.validateAlerts, c.validatePricing, c.validateCloud, c.validateModels} {
		if p := check(); p != nil {
			return p
		}
	}
	return nil
}

func bad(key, format string, args ...any) *problem {
	return &problem{key: key, msg: fmt.Sprintf(format, args...)}
}

func oneOf(key, v string, allowed ...string) *problem {
	if slices.Contains(allowed, v) {
		return nil
	}
	return bad(key, "must be one of %s (got %q)", strings.Join(allowed, ", "), v)
}

// validateTop checks host, every numeric range (bounds.go), then the
// other top-level keys.
func (c *Config) validateTop() *problem {
	if strings.ContainsAny(c.Host, " \t\r\n/") {
		return bad("host", "invalid host %q", c.Host)
	}
	// Every numeric setting has a range (bounds.go), checked in key order
	// before the checks that relate settings to each other.
	for _, s := range settings {
		if p := s.checkBound(c); p != nil {
			return p
		}
	}
	if p := oneOf("lb_strategy", c.LBStrategy, StrategyAffinity, StrategySession, StrategyRoundRobin, StrategyLeastUsed); p != nil {
		return p
	}
	if strings.TrimSpace(c.ClientID) == "" {
		return bad("client_id", "must not be empty")
	}
	if p := oneOf("log_level", c.LogLevel, "debug", "info", "warn", "error"); p != nil {
		return p
	}
	if p := oneOf("log_format", c.LogFormat, "auto", "text", "json"); p != nil {
		return p
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return bad("allowed_origins", "invalid origin %q (want scheme://host[:port] or *)", o)
		}
	}
	if p := checkURL("upstream_url", c.UpstreamURL); p != nil {
		return p
	}
	if p := checkURL("oauth_token_url", c.OAuthTokenURL); p != nil {
		return p
	}
	return nil
}

// validateServer checks the server and upstream keys, then the settings
// that relate to each other.
func (c *Config) validateServer() *problem {
	switch {
	case c.Server.TLSCert != "" && c.Server.TLSKey == "":
		return bad("server.tls_cert", "needs server.tls_key too (set both or neither)")
	case c.Server.TLSCert == "" && c.Server.TLSKey != "":
		return bad("server.tls_key", "needs server.tls_cert too (set both or neither)")
	}
	for _, a := range c.Server.AllowIPs {
		if _, err := netip.ParsePrefix(a); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(a); err == nil {
			continue
		}
		return bad("server.allow_ips", "invalid IP or CIDR %q", a)
	}

	if pin := c.Upstream.PinSHA256; pin != "" {
		b, err := base64.StdEncoding.DecodeString(pin)
		if err != nil || len(b) != 32 {
			return bad("upstream.pin_sha256", "must be the base64 SHA-256 of the upstream's public key (44 characters)")
		}
	}

	if c.Server.MaxInflightBodyBytes < c.Server.MaxBodyBytes {
		p := bad("server.max_inflight_body_bytes", "must not be less than server.max_body_bytes (%d)", c.Server.MaxBodyBytes)
		p.alt = bad("server.max_body_bytes", "must not be more than server.max_inflight_body_bytes (%d)", c.Server.MaxInflightBodyBytes)
		return p
	}
	if c.RateLimit.CooldownMax < c.RateLimit.CooldownInitial {
		p := bad("ratelimit.cooldown_max", "must not be less than ratelimit.cooldown_initial (%s)", c.RateLimit.CooldownInitial)
		p.alt = bad("ratelimit.cooldown_initial", "must not be more than ratelimit.cooldown_max (%s)", c.RateLimit.CooldownMax)
		return p
	}
	return nil
}

// validateLog checks the log keys and compiles the redactors.
func (c *Config) validateLog() *problem {
	if p := oneOf("log.payloads", c.Log.Payloads, PayloadsFull, PayloadsHeaders, PayloadsOff); p != nil {
		return p
	}
	for _, p := range c.Log.BodyPaths {
		if !strings.HasPrefix(p, "/") {
			return bad("log.body_paths", "path prefix %q must start with /", p)
		}
	}
	var res []*regexp.Regexp
	for _, p := range c.Log.Redact {
		re, err := regexp.Compile(p)
		if err != nil {
			return bad("log.redact", "invalid regular expression %q: %s", p, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
		if re.MatchString("") {
			return bad("log.redact", "regular expression %q matches the empty string", p)
		}
		res = append(res, re)
	}

	c.redactors = res
	return nil
}

// checkURL requires an absolute https URL with a host, or an http URL to
// a loopback host (127.0.0.0/8, ::1, localhost): anything else would send
// tokens in cleartext over a network.
func checkURL(key, v string) *problem {
	u, err := url.Parse(v)
	if err != nil {
		return &problem{key: key, msg: "must be an absolute http or https URL"}
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return &problem{key: key, msg: fmt.Sprintf("must be an absolute http or https URL (got %q)", hideUserinfo(u))}
	}
	if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		return &problem{key: key, msg: fmt.Sprintf("must be an https URL: http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost), got %q", hideUserinfo(u))}
	}
	return nil
}

// hideUserinfo is u for a message, its user and password (which may be
// credentials) replaced by "xxxxx".
func hideUserinfo(u *url.URL) string {
	if u.User == nil {
		return u.String()
	}
	c := *u
	c.User = url.User("xxxxx")
	return c.String()
}

// loopbackHost reports whether host names this machine: localhost, an
// address in 127.0.0.0/8 or ::1.
func loopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
