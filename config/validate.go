package config

import (
	"encoding/base64"
	"fmt"
	"math"
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
	bad := func(key, format string, args ...any) *problem {
		return &problem{key: key, msg: fmt.Sprintf(format, args...)}
	}
	oneOf := func(key, v string, allowed ...string) *problem {
		if slices.Contains(allowed, v) {
			return nil
		}
		return bad(key, "must be one of %s (got %q)", strings.Join(allowed, ", "), v)
	}

	if strings.ContainsAny(c.Host, " \t\r\n/") {
		return bad("host", "invalid host %q", c.Host)
	}
	if c.Port < 0 || c.Port > 65535 {
		return bad("port", "must be between 0 and 65535")
	}
	if p := oneOf("lb_strategy", c.LBStrategy, "session", "round-robin", "least-used"); p != nil {
		return p
	}
	if c.SessionDurationMS <= 0 {
		return bad("session_duration_ms", "must be greater than 0")
	}
	if c.RetryAttempts < 1 {
		return bad("retry_attempts", "must be at least 1")
	}
	if c.RetryDelayMS < 0 {
		return bad("retry_delay_ms", "must not be negative")
	}
	if math.IsNaN(c.RetryBackoff) || math.IsInf(c.RetryBackoff, 0) || c.RetryBackoff < 1 {
		return bad("retry_backoff", "must be a number of at least 1")
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
	if c.Server.MaxBodyBytes <= 0 {
		return bad("server.max_body_bytes", "must be greater than 0")
	}

	if pin := c.Upstream.PinSHA256; pin != "" {
		b, err := base64.StdEncoding.DecodeString(pin)
		if err != nil || len(b) != 32 {
			return bad("upstream.pin_sha256", "must be the base64 SHA-256 of the upstream's public key (44 characters)")
		}
	}

	for _, s := range settings {
		if s.typ == durationType && s.field(c).Int() < 0 {
			return bad(s.Key, "must not be negative")
		}
	}
	if c.RateLimit.CooldownMax < c.RateLimit.CooldownInitial {
		p := bad("ratelimit.cooldown_max", "must not be less than ratelimit.cooldown_initial (%s)", c.RateLimit.CooldownInitial)
		p.alt = bad("ratelimit.cooldown_initial", "must not be more than ratelimit.cooldown_max (%s)", c.RateLimit.CooldownMax)
		return p
	}

	if p := oneOf("log.payloads", c.Log.Payloads, PayloadsFull, PayloadsHeaders, PayloadsOff); p != nil {
		return p
	}
	if c.Log.PayloadMaxBytes < 0 {
		return bad("log.payload_max_bytes", "must not be negative")
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
	if c.Log.QueueSize < 1 {
		return bad("log.queue_size", "must be at least 1")
	}
	if c.Log.FlushInterval <= 0 {
		return bad("log.flush_interval", "must be greater than 0")
	}
	if c.Log.BatchSize < 1 {
		return bad("log.batch_size", "must be at least 1")
	}

	if c.Limits.RequestsPerMinute < 0 {
		return bad("limits.requests_per_minute", "must not be negative (0 is unlimited)")
	}
	if c.Limits.ConcurrentStreams < 0 {
		return bad("limits.concurrent_streams", "must not be negative (0 is unlimited)")
	}

	c.redactors = res
	return nil
}

// checkURL requires an absolute http or https URL with a host.
func checkURL(key, v string) *problem {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &problem{key: key, msg: fmt.Sprintf("must be an absolute http or https URL (got %q)", v)}
	}
	return nil
}
