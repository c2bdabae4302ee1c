// Package config holds claudeflare's settings: the Config struct and its
// defaults, the TOML file, the environment and command-line overlays (flag >
// environment > file > default) and validation.
//
// Secrets (CLAUDEFLARE_ENCRYPTION_KEY, CLAUDEFLARE_PASSPHRASE) are not
// settings and are never read here.
package config

import (
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/claudeflare/claudeflare/oauth"
)

// Config is the full set of settings. Field tags are the TOML keys; the
// sections are tables of their own. claudeflare.toml.example at the
// repository root documents every key.
type Config struct {
	// File is the config file that was read, "" when none was.
	File string `toml:"-"`

	// DataDir holds the vault, the request log and identity.txt. After Load
	// it is always an absolute path (not created by Load).
	DataDir string `toml:"data_dir"`
	// Host is the address the proxy listens on.
	Host string `toml:"host"`
	// Port is the TCP port the proxy listens on; 0 picks a free one.
	Port int `toml:"port"`
	// LBStrategy is StrategyAffinity, StrategySession, StrategyRoundRobin
	// or StrategyLeastUsed.
	LBStrategy string `toml:"lb_strategy"`
	// SessionDurationMS is how long the session strategy sticks to one
	// account, in milliseconds.
	SessionDurationMS int64 `toml:"session_duration_ms"`
	// RetryAttempts is the number of accounts a request may try (>= 1).
	RetryAttempts int `toml:"retry_attempts"`
	// RetryDelayMS is the wait before the first retry, in milliseconds.
	RetryDelayMS int64 `toml:"retry_delay_ms"`
	// RetryBackoff multiplies the delay after each retry (>= 1).
	RetryBackoff float64 `toml:"retry_backoff"`
	// ClientID is the OAuth client id.
	ClientID string `toml:"client_id"`
	// LogLevel is "debug", "info", "warn" or "error".
	LogLevel string `toml:"log_level"`
	// LogFormat is "auto" (text on a terminal, JSON otherwise), "text" or
	// "json".
	LogFormat string `toml:"log_format"`
	// Debug turns on debug behaviour and forces LogLevel to "debug".
	Debug bool `toml:"debug"`
	// AllowedOrigins are the browser origins allowed by CORS; "*" allows all.
	AllowedOrigins []string `toml:"allowed_origins"`
	// IdentityFile is the age master identity; "" means
	// <DataDir>/identity.txt (see IdentityPath).
	IdentityFile string `toml:"identity_file"`
	// UpstreamURL is the base URL requests are forwarded to.
	UpstreamURL string `toml:"upstream_url"`
	// OAuthTokenURL is the OAuth token endpoint.
	OAuthTokenURL string `toml:"oauth_token_url"`

	Server    Server    `toml:"server"`
	Upstream  Upstream  `toml:"upstream"`
	Tokens    Tokens    `toml:"tokens"`
	RateLimit RateLimit `toml:"ratelimit"`
	Routing   Routing   `toml:"routing"`
	Log       Log       `toml:"log"`
	Retention Retention `toml:"retention"`
	Limits    Limits    `toml:"limits"`
	Metrics   Metrics   `toml:"metrics"`
	Alerts    Alerts    `toml:"alerts"`
	Pricing   Pricing   `toml:"pricing"`
	Cloud     Cloud     `toml:"cloud"`
	Models    Models    `toml:"models"`

	redactors []*regexp.Regexp
	// origins says where Load found each key set by a layer (Origin).
	origins map[string]Origin
}

// Server is the [server] section: the proxy's own HTTP server.
type Server struct {
	// TLSCert and TLSKey are PEM files; set both to serve HTTPS, or neither.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// AllowIPs limits clients to these CIDRs or bare IPs; empty allows all.
	AllowIPs []string `toml:"allow_ips"`
	// MaxBodyBytes caps a request body.
	MaxBodyBytes int64 `toml:"max_body_bytes"`
	// ShutdownGrace is how long a graceful shutdown waits for requests.
	ShutdownGrace Duration `toml:"shutdown_grace"`
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	// BodyReadTimeout bounds reading a whole request body.
	BodyReadTimeout Duration `toml:"body_read_timeout"`
	// MaxInflightBodyBytes bounds the memory all request bodies being
	// read or replayed may hold together; past it requests get 503.
	MaxInflightBodyBytes int64 `toml:"max_inflight_body_bytes"`
}

// Upstream is the [upstream] section: the connection to the upstream API.
type Upstream struct {
	// PinSHA256 is a base64 SHA-256 of the upstream's SPKI; "" pins nothing.
	PinSHA256 string `toml:"pin_sha256"`
	// ResponseHeaderTimeout bounds the wait for the upstream's headers.
	ResponseHeaderTimeout Duration `toml:"response_header_timeout"`
	// DialTimeout bounds connecting to the upstream.
	DialTimeout Duration `toml:"dial_timeout"`
}

// Tokens is the [tokens] section.
type Tokens struct {
	// RefreshMargin is how long before expiry an access token is refreshed.
	RefreshMargin Duration `toml:"refresh_margin"`
}

// RateLimit is the [ratelimit] section: how long accounts rest.
type RateLimit struct {
	// CooldownInitial is the first back-off of a rate-limited account
	// without a reset time.
	CooldownInitial Duration `toml:"cooldown_initial"`
	// CooldownMax caps the doubling back-off.
	CooldownMax Duration `toml:"cooldown_max"`
	// OverloadedCooldown is no longer used: a 529 never rests an account
	// (kept so that existing config files still load).
	OverloadedCooldown Duration `toml:"overloaded_cooldown"`
	// RecheckInterval spaces the cheap probes that re-check an account
	// blocked far ahead (a limit ending later than this) or quarantined.
	RecheckInterval Duration `toml:"recheck_interval"`
}

// Routing is the [routing] section: how the affinity strategy places
// sessions and steers them before an account's limit.
type Routing struct {
	// MaxUtilization is the share of an account's 5h or 7d window at which
	// it takes no new sessions and its sessions move (0.95).
	MaxUtilization float64 `toml:"max_utilization"`
	// SessionIdle is how long an idle session keeps its account (the
	// prompt cache's life).
	SessionIdle Duration `toml:"session_idle"`
	// SessionsMax bounds the session table; the least recently used
	// session goes first.
	SessionsMax int `toml:"sessions_max"`
	// HoldMax, when not 0, makes a request wait for an account instead of
	// getting the all-limited 429 when the earliest reset is this near.
	HoldMax Duration `toml:"hold_max"`
}

// Load-balancing strategies for LBStrategy (lb_strategy, LB_STRATEGY).
const (
	// StrategyAffinity keeps each client session (Claude Code's session
	// id, else the client) on one account while it is usable and under
	// routing.max_utilization, and places new sessions by headroom. The
	// default: every move of a session costs a prompt-cache miss.
	StrategyAffinity = "affinity"
	// StrategySession keeps one active account for SESSION_DURATION_MS, the
	// others standing by in priority order, as one person uses one account.
	StrategySession = "session"
	// StrategyRoundRobin rotates over the usable accounts. Meant for API-key
	// pools; with subscription accounts it looks like one person on many
	// machines, which is riskier.
	StrategyRoundRobin = "round-robin"
	// StrategyLeastUsed prefers the account with the fewest requests in
	// flight, then the fewest served. Same caveat as round-robin.
	StrategyLeastUsed = "least-used"
)

// Payload capture modes for Log.Payloads.
const (
	PayloadsFull    = "full"
	PayloadsHeaders = "headers"
	PayloadsOff     = "off"
)

// Log is the [log] section: the request log and payload capture.
type Log struct {
	// Payloads is "full" (headers and bodies), "headers" or "off".
	Payloads string `toml:"payloads"`
	// PayloadMaxBytes caps each stored body; longer ones are truncated.
	PayloadMaxBytes int64 `toml:"payload_max_bytes"`
	// BodyPaths are the request path prefixes whose bodies are kept when
	// Payloads is "full"; empty keeps all.
	BodyPaths []string `toml:"body_paths"`
	// Redact are regular expressions whose matches are replaced in stored
	// payloads. See Config.Redactors.
	Redact []string `toml:"redact"`
	// QueueSize is the recorder's queue length; when full, records drop.
	QueueSize int `toml:"queue_size"`
	// QueueBytes bounds the memory the recorder's queue holds (rows and
	// payloads); past seven eighths of it payloads are dropped, past it
	// rows too.
	QueueBytes int64 `toml:"queue_bytes"`
	// FlushInterval is the longest a record waits before being written.
	FlushInterval Duration `toml:"flush_interval"`
	// BatchSize is the most records written in one transaction.
	BatchSize int `toml:"batch_size"`
}

// Retention is the [retention] section: the daemon's periodic cleanup. A
// zero duration means never.
type Retention struct {
	PayloadsMaxAge Duration `toml:"payloads_max_age"`
	RequestsMaxAge Duration `toml:"requests_max_age"`
	Interval       Duration `toml:"interval"`
}

// Limits is the [limits] section; 0 means unlimited.
type Limits struct {
	RequestsPerMinute int `toml:"requests_per_minute"`
	ConcurrentStreams int `toml:"concurrent_streams"`
}

// Metrics is the [metrics] section.
type Metrics struct {
	// Public serves /metrics without a client key.
	Public bool `toml:"public"`
}

// defaultRedact are the default log.redact patterns: Anthropic keys and
// bearer tokens.
var defaultRedact = []string{
	`sk-ant-[A-Za-z0-9_\-]{8,}`,
	`(?i)bearer\s+[A-Za-z0-9._~+/=\-]{8,}`,
}

// Default returns the built-in settings. DataDir is "" (resolved by Load).
func Default() Config {
	c := Config{
		Host:              "127.0.0.1",
		Port:              8080,
		LBStrategy:        StrategyAffinity,
		SessionDurationMS: 18000000,
		RetryAttempts:     3,
		RetryDelayMS:      1000,
		RetryBackoff:      2.0,
		ClientID:          oauth.DefaultClientID,
		LogLevel:          "info",
		LogFormat:         "auto",
		AllowedOrigins:    []string{},
		UpstreamURL:       oauth.DefaultAPIBase,
		OAuthTokenURL:     oauth.DefaultTokenURL,
		Server: Server{
			AllowIPs:             []string{},
			MaxBodyBytes:         32 << 20,
			ShutdownGrace:        Duration(30 * time.Second),
			ReadHeaderTimeout:    Duration(10 * time.Second),
			BodyReadTimeout:      Duration(2 * time.Minute),
			MaxInflightBodyBytes: 256 << 20,
		},
		Upstream: Upstream{
			ResponseHeaderTimeout: Duration(10 * time.Minute),
			DialTimeout:           Duration(10 * time.Second),
		},
		Tokens: Tokens{
			RefreshMargin: Duration(5 * time.Minute),
		},
		RateLimit: RateLimit{
			CooldownInitial:    Duration(30 * time.Second),
			CooldownMax:        Duration(5 * time.Minute),
			OverloadedCooldown: Duration(10 * time.Second),
			RecheckInterval:    Duration(5 * time.Minute),
		},
		Routing: Routing{
			MaxUtilization: 0.95,
			SessionIdle:    Duration(time.Hour),
			SessionsMax:    10000,
		},
		Log: Log{
			Payloads:        PayloadsFull,
			PayloadMaxBytes: 1 << 20,
			BodyPaths:       []string{},
			Redact:          append([]string(nil), defaultRedact...),
			QueueSize:       8192,
			QueueBytes:      32 << 20,
			FlushInterval:   Duration(250 * time.Millisecond),
			BatchSize:       256,
		},
		Retention: Retention{
			PayloadsMaxAge: Duration(7 * Day),
			RequestsMaxAge: Duration(365 * Day),
			Interval:       Duration(time.Hour),
		},
		Alerts: Alerts{Webhook: Webhooks{}},
	}
	c.Pricing = Pricing{} // none: the built-in prices (pricing.Default)
	// None: the built-in model tables (package cloud).
	c.Cloud = Cloud{BedrockModels: ModelMap{}, VertexModels: ModelMap{}}
	c.Models = Models{Aliases: ModelAliases{}, Allow: ModelAllow{}} // no aliases; every model allowed
	for _, p := range c.Log.Redact {
		c.redactors = append(c.redactors, regexp.MustCompile(p))
	}
	return c
}

// Addr is the listen address, Host:Port.
func (c *Config) Addr() string {
	return net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
}

// IdentityPath is the master identity file: IdentityFile, or identity.txt
// in DataDir.
func (c *Config) IdentityPath() string {
	if c.IdentityFile != "" {
		return c.IdentityFile
	}
	return filepath.Join(c.DataDir, "identity.txt")
}

// SessionDuration is SessionDurationMS as a time.Duration.
func (c *Config) SessionDuration() time.Duration {
	return time.Duration(c.SessionDurationMS) * time.Millisecond
}

// RetryDelay is RetryDelayMS as a time.Duration.
func (c *Config) RetryDelay() time.Duration {
	return time.Duration(c.RetryDelayMS) * time.Millisecond
}

// Redactors returns the compiled log.redact patterns, compiled once by
// Load, Validate or Default. Change Log.Redact only through a new Load.
func (c *Config) Redactors() []*regexp.Regexp {
	return c.redactors
}

// SlogLevel is LogLevel as a slog.Level (info when unknown).
func (c *Config) SlogLevel() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// JSONLogs reports whether logs should be JSON: LogFormat "json", or "auto"
// when stderr is not a terminal (as under systemd).
func (c *Config) JSONLogs(stderrIsTerminal bool) bool {
	switch c.LogFormat {
	case "json":
		return true
	case "text":
		return false
	}
	return !stderrIsTerminal
}
