package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// env is a fake environment whose HOME is a temporary directory, so no test
// reads the real ~/.config.
type env map[string]string

func newEnv(t *testing.T) env {
	return env{"HOME": t.TempDir()}
}

func (e env) get(k string) string { return e[k] }

// writeFile writes a config file in a temporary directory.
func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "claudeflare.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// loadErr loads and requires an *Error.
func loadErr(t *testing.T, src Source) *Error {
	t.Helper()
	c, err := Load(src)
	if err == nil {
		t.Fatalf("Load succeeded, want error; config %+v", c)
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load error %T %q, want *config.Error", err, err)
	}
	return ce
}

func TestDefaultsLoad(t *testing.T) {
	e := newEnv(t)
	c, err := Load(Source{Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	if c.File != "" {
		t.Errorf("File = %q, want none", c.File)
	}
	if want := filepath.Join(e["HOME"], ".local", "share", "claudeflare"); c.DataDir != want {
		t.Errorf("DataDir = %q, want %q", c.DataDir, want)
	}
	if c.Addr() != "127.0.0.1:8080" {
		t.Errorf("Addr = %q", c.Addr())
	}
	if want := filepath.Join(c.DataDir, "identity.txt"); c.IdentityPath() != want {
		t.Errorf("IdentityPath = %q, want %q", c.IdentityPath(), want)
	}
	if c.SessionDuration() != 5*time.Hour {
		t.Errorf("SessionDuration = %v", c.SessionDuration())
	}
	if c.RetryDelay() != time.Second {
		t.Errorf("RetryDelay = %v", c.RetryDelay())
	}
	if c.Server.MaxBodyBytes != 32<<20 || c.Log.PayloadMaxBytes != 1<<20 {
		t.Errorf("byte limits %d %d", c.Server.MaxBodyBytes, c.Log.PayloadMaxBytes)
	}
	if len(c.Redactors()) != 2 || !c.Redactors()[0].MatchString("sk-ant-api03-abcdefgh") ||
		!c.Redactors()[1].MatchString("Authorization: Bearer abcdefgh1234") {
		t.Errorf("default redactors %v", c.Redactors())
	}
}

// TestPrecedence checks flag > env > file > default for every combination of
// layers, for several keys.
func TestPrecedence(t *testing.T) {
	home := t.TempDir()
	type layer struct {
		val  string // TOML literal for the file, the string for env and flag
		want any
	}
	keys := []struct {
		key              string
		env              string
		def              any
		file, envv, flag *layer
		get              func(*Config) any
	}{
		{
			key: "host", env: "CLAUDEFLARE_HOST", def: "127.0.0.1",
			file: &layer{`"0.0.0.0"`, "0.0.0.0"}, envv: &layer{"10.0.0.1", "10.0.0.1"}, flag: &layer{"::1", "::1"},
			get: func(c *Config) any { return c.Host },
		},
		{
			key: "port", env: "CLAUDEFLARE_PORT", def: 8080,
			file: &layer{`9000`, 9000}, envv: &layer{"9001", 9001}, flag: &layer{"0", 0},
			get: func(c *Config) any { return c.Port },
		},
		{
			key: "data_dir", env: "CLAUDEFLARE_DATA_DIR", def: filepath.Join(home, ".local", "share", "claudeflare"),
			file: &layer{`"/srv/file"`, "/srv/file"}, envv: &layer{"/srv/env", "/srv/env"}, flag: &layer{"/srv/flag", "/srv/flag"},
			get: func(c *Config) any { return c.DataDir },
		},
		{
			key: "lb_strategy", env: "CLAUDEFLARE_LB_STRATEGY", def: "affinity",
			file: &layer{`"round-robin"`, "round-robin"}, envv: &layer{"least-used", "least-used"}, flag: &layer{"session", "session"},
			get: func(c *Config) any { return c.LBStrategy },
		},
		{
			key: "retry_backoff", env: "CLAUDEFLARE_RETRY_BACKOFF", def: 2.0,
			file: &layer{`1.5`, 1.5}, envv: &layer{"3", 3.0}, flag: &layer{"4.25", 4.25},
			get: func(c *Config) any { return c.RetryBackoff },
		},
		{
			key: "allowed_origins", env: "CLAUDEFLARE_ALLOWED_ORIGINS", def: []string{},
			file: &layer{`["https://a.example"]`, []string{"https://a.example"}},
			envv: &layer{"https://b.example, https://c.example:8443", []string{"https://b.example", "https://c.example:8443"}},
			flag: &layer{"*", []string{"*"}},
			get:  func(c *Config) any { return c.AllowedOrigins },
		},
		{
			key: "debug", env: "CLAUDEFLARE_DEBUG", def: false,
			file: &layer{`true`, true}, envv: &layer{"0", false}, flag: &layer{"1", true},
			get: func(c *Config) any { return c.Debug },
		},
		{
			key: "upstream_url", env: "CLAUDEFLARE_UPSTREAM_URL", def: "https://api.anthropic.com",
			file: &layer{`"http://127.0.0.1:1"`, "http://127.0.0.1:1"}, envv: &layer{"http://127.0.0.1:2", "http://127.0.0.1:2"}, flag: &layer{"http://127.0.0.1:3", "http://127.0.0.1:3"},
			get: func(c *Config) any { return c.UpstreamURL },
		},
		{
			key: "log.payloads", env: "CLAUDEFLARE_LOG_PAYLOADS", def: "full",
			file: &layer{`"headers"`, "headers"}, envv: &layer{"full", "full"}, flag: &layer{"off", "off"},
			get: func(c *Config) any { return c.Log.Payloads },
		},
		{
			key: "server.shutdown_grace", env: "CLAUDEFLARE_SERVER_SHUTDOWN_GRACE", def: Duration(30 * time.Second),
			file: &layer{`"1m"`, Duration(time.Minute)}, envv: &layer{"2m", Duration(2 * time.Minute)}, flag: &layer{"1h", Duration(time.Hour)},
			get: func(c *Config) any { return c.Server.ShutdownGrace },
		},
		{
			key: "retention.payloads_max_age", env: "CLAUDEFLARE_RETENTION_PAYLOADS_MAX_AGE", def: Duration(7 * Day),
			file: &layer{`"1w2d"`, Duration(9 * Day)}, envv: &layer{"3d", Duration(3 * Day)}, flag: &layer{"0", Duration(0)},
			get: func(c *Config) any { return c.Retention.PayloadsMaxAge },
		},
	}
	for _, k := range keys {
		if s := settingByKey[k.key]; s == nil || s.Env != k.env {
			t.Fatalf("key %q: table has %+v, want env %q", k.key, s, k.env)
		}
		for mask := 0; mask < 8; mask++ {
			useFile, useEnv, useFlag := mask&1 != 0, mask&2 != 0, mask&4 != 0
			if useEnv && k.envv == nil {
				continue
			}
			name := k.key + "/default"
			src := Source{Getenv: env{"HOME": home}.get}
			want := k.def
			if useFile {
				name += "+file"
				text := "# precedence\n" + k.key + " = " + k.file.val + "\n"
				if sec, key, ok := strings.Cut(k.key, "."); ok {
					text = "[" + sec + "]\n" + key + " = " + k.file.val + "\n"
				}
				src.Path = writeFile(t, text)
				want = k.file.want
			}
			if useEnv {
				name += "+env"
				src.Getenv = env{"HOME": home, k.env: k.envv.val}.get
				want = k.envv.want
			}
			if useFlag {
				name += "+flag"
				src.Flags = map[string]string{k.key: k.flag.val}
				want = k.flag.want
			}
			t.Run(name, func(t *testing.T) {
				c, err := Load(src)
				if err != nil {
					t.Fatal(err)
				}
				if got := k.get(c); !reflect.DeepEqual(got, want) {
					t.Errorf("got %#v, want %#v", got, want)
				}
			})
		}
	}
}

func TestErrorLines(t *testing.T) {
	tests := []struct {
		name, text string
		line       int
		key        string
		msg        string // the whole message after "config <file>:<line>: "
	}{
		{
			name: "unknown top-level key",
			text: "# claudeflare\nport = 9000\nlb_stratgy = \"session\"\n",
			line: 3, key: "lb_stratgy",
			msg: `unknown key "lb_stratgy" (did you mean "lb_strategy"?)`,
		},
		{
			name: "unknown key in a section",
			text: "port = 1\n\n[server]\ntls_cert = \"\"\n\n# typo below\ntls_kye = \"x\"\n",
			line: 7, key: "server.tls_kye",
			msg: `unknown key "server.tls_kye" (did you mean "server.tls_key"?)`,
		},
		{
			name: "unknown key in a later section",
			text: "[server]\nallow_ips = []\n[log]\npayloads = \"full\"\nallow_ips = []\n",
			line: 5, key: "log.allow_ips",
			msg: `unknown key "log.allow_ips"`,
		},
		{
			name: "unknown section",
			text: "host = \"127.0.0.1\"\n[sever]\nport = 1\n",
			line: 2, key: "sever",
			msg: `unknown key "sever" (did you mean "server"?)`,
		},
		{
			name: "unknown dotted key",
			text: "host = \"127.0.0.1\"\nlog.payload = \"full\"\n",
			line: 2, key: "log.payload",
			msg: `unknown key "log.payload" (did you mean "log.payloads"?)`,
		},
		{
			name: "unknown key in an inline table",
			text: "host = \"127.0.0.1\"\nlimits = { requests_per_minute = 1,\n  bogus = 2 }\n",
			line: 3, key: "limits.bogus",
			msg: `unknown key "limits.bogus"`,
		},
		{
			name: "unknown key after a multi-line string",
			text: "client_id = \"\"\"\nx = 1\n\"\"\"\nbogus = 1\n",
			line: 4, key: "bogus",
			msg: `unknown key "bogus"`,
		},
		{
			name: "key in the wrong case",
			text: "\nPORT = 9000\n",
			line: 2, key: "PORT",
			msg: `unknown key "PORT" (did you mean "port"?)`,
		},
		{
			name: "string for an integer",
			text: "host = \"::1\"\n\nport = \"8080\"\n",
			line: 3, key: "port",
			msg: `port: must be an integer, not a string`,
		},
		{
			name: "integer for a list",
			text: "[server]\n\nallow_ips = 5\n",
			line: 3, key: "server.allow_ips",
			msg: `server.allow_ips: must be an array, not an integer`,
		},
		{
			name: "value for a section",
			text: "\nserver = 5\n",
			line: 2, key: "server",
			msg: `server: must be a table, not an integer`,
		},
		{
			name: "duration without unit",
			text: "[server]\nmax_body_bytes = 10\nshutdown_grace = \"30\"\n",
			line: 3, key: "server.shutdown_grace",
			msg: `server.shutdown_grace: missing unit in duration "30"`,
		},
		{
			name: "negative duration",
			text: "[retention]\n\ninterval = \"-1h\"\n",
			line: 3, key: "retention.interval",
			msg: `retention.interval: negative duration "-1h"`,
		},
		{
			name: "port out of range",
			text: "host = \"127.0.0.1\"\n\nport = 70000\n",
			line: 3, key: "port",
			msg: `port: must be between 0 and 65535`,
		},
		{
			name: "bad enum in a section",
			text: "[log]\n# what to keep\npayloads = \"some\"\n",
			line: 3, key: "log.payloads",
			msg: `log.payloads: must be one of full, headers, off (got "some")`,
		},
		{
			name: "bad redact regex",
			text: "[log]\nredact = [\n  'sk-ant-.+',\n  '(unclosed',\n]\n",
			line: 2, key: "log.redact",
			msg: `log.redact: invalid regular expression "(unclosed": missing closing ): ` + "`(unclosed`",
		},
		{
			name: "bad CIDR",
			text: "[server]\nallow_ips = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
			line: 2, key: "server.allow_ips",
			msg: `server.allow_ips: invalid IP or CIDR "10.0.0.0/33"`,
		},
		{
			name: "tls cert without key",
			text: "[server]\ntls_cert = \"cert.pem\"\n",
			line: 2, key: "server.tls_cert",
			msg: `server.tls_cert: needs server.tls_key too (set both or neither)`,
		},
		{
			name: "relative upstream url",
			text: "upstream_url = \"api.anthropic.com\"\n",
			line: 1, key: "upstream_url",
			msg: `upstream_url: must be an absolute http or https URL (got "api.anthropic.com")`,
		},
		{
			name: "cleartext upstream to another host",
			text: "\nupstream_url = \"http://api.example.com\"\n",
			line: 2, key: "upstream_url",
			msg: `upstream_url: must be an https URL: http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost), got "http://api.example.com"`,
		},
		{
			name: "cleartext upstream with credentials in the url",
			text: "upstream_url = \"http://alice:s3cret-pw@api.example.com\"\n",
			line: 1, key: "upstream_url",
			msg: `upstream_url: must be an https URL: http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost), got "http://xxxxx@api.example.com"`,
		},
		{
			name: "unparsable upstream url with credentials",
			text: "upstream_url = \"https://alice:s3cret-pw@api.example.com:bad\"\n",
			line: 1, key: "upstream_url",
			msg: `upstream_url: must be an absolute http or https URL`,
		},
		{
			name: "cleartext token url to a private address",
			text: "oauth_token_url = \"http://10.0.0.1:8080/v1/oauth/token\"\n",
			line: 1, key: "oauth_token_url",
			msg: `oauth_token_url: must be an https URL: http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost), got "http://10.0.0.1:8080/v1/oauth/token"`,
		},
		{
			name: "cleartext upstream to a name that starts like localhost",
			text: "upstream_url = \"http://localhost.evil.example\"\n",
			line: 1, key: "upstream_url",
			msg: `upstream_url: must be an https URL: http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost), got "http://localhost.evil.example"`,
		},
		{
			name: "retry attempts zero",
			text: "retry_attempts = 0\n",
			line: 1, key: "retry_attempts",
			msg: `retry_attempts: must be between 1 and 20`,
		},
		{
			name: "backoff below one",
			text: "\n\n\nretry_backoff = 0.5\n",
			line: 4, key: "retry_backoff",
			msg: `retry_backoff: must be a number between 1 and 10`,
		},
		{
			name: "cooldowns in the wrong order",
			text: "[ratelimit]\ncooldown_initial = \"10m\"\n",
			line: 2, key: "ratelimit.cooldown_initial",
			msg: `ratelimit.cooldown_initial: must not be more than ratelimit.cooldown_max (5m)`,
		},
		{
			name: "bad pin",
			text: "[upstream]\npin_sha256 = \"abc\"\n",
			line: 2, key: "upstream.pin_sha256",
			msg: `upstream.pin_sha256: must be the base64 SHA-256 of the upstream's public key (44 characters)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.text)
			e := loadErr(t, Source{Path: path, Getenv: newEnv(t).get})
			if e.File != path || e.Line != tt.line || e.Key != tt.key {
				t.Errorf("got file %q line %d key %q, want %q %d %q (%v)", e.File, e.Line, e.Key, path, tt.line, tt.key, e)
			}
			want := "config " + path + ":" + itoa(tt.line) + ": " + tt.msg
			if e.Error() != want {
				t.Errorf("message\n got %s\nwant %s", e.Error(), want)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestSyntaxError(t *testing.T) {
	path := writeFile(t, "host = \"127.0.0.1\"\nport = \n")
	e := loadErr(t, Source{Path: path, Getenv: newEnv(t).get})
	if e.File != path || e.Line != 2 {
		t.Errorf("got %q line %d (%v), want line 2", e.File, e.Line, e)
	}
	if !strings.HasPrefix(e.Error(), "config "+path+":2: ") {
		t.Errorf("message %q", e)
	}
}

func TestEnvErrors(t *testing.T) {
	tests := []struct {
		name, env, val, want string
	}{
		{"integer", "CLAUDEFLARE_PORT", "abc", `config env CLAUDEFLARE_PORT: invalid integer "abc"`},
		{"range", "CLAUDEFLARE_PORT", "70000", `config env CLAUDEFLARE_PORT: must be between 0 and 65535`},
		{"overflow", "CLAUDEFLARE_RETRY_ATTEMPTS", "99999999999999999999", `config env CLAUDEFLARE_RETRY_ATTEMPTS: integer "99999999999999999999" out of range`},
		{"bool", "CLAUDEFLARE_DEBUG", "yes", `config env CLAUDEFLARE_DEBUG: invalid boolean "yes" (use 1, true, 0 or false)`},
		{"float", "CLAUDEFLARE_RETRY_BACKOFF", "fast", `config env CLAUDEFLARE_RETRY_BACKOFF: invalid number "fast"`},
		{"nan", "CLAUDEFLARE_RETRY_BACKOFF", "NaN", `config env CLAUDEFLARE_RETRY_BACKOFF: must be a number between 1 and 10`},
		{"enum", "CLAUDEFLARE_LOG_FORMAT", "xml", `config env CLAUDEFLARE_LOG_FORMAT: must be one of auto, text, json (got "xml")`},
		{"section", "CLAUDEFLARE_LOG_PAYLOADS", "some", `config env CLAUDEFLARE_LOG_PAYLOADS: must be one of full, headers, off (got "some")`},
		{"duration", "CLAUDEFLARE_RETENTION_INTERVAL", "5", `config env CLAUDEFLARE_RETENTION_INTERVAL: missing unit in duration "5"`},
		{"url", "CLAUDEFLARE_OAUTH_TOKEN_URL", "ftp://x/token", `config env CLAUDEFLARE_OAUTH_TOKEN_URL: must be an absolute http or https URL (got "ftp://x/token")`},
		{"cleartext", "CLAUDEFLARE_UPSTREAM_URL", "http://0.0.0.0:8080", `config env CLAUDEFLARE_UPSTREAM_URL: must be an https URL: http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost), got "http://0.0.0.0:8080"`},
		{"cleartext token", "CLAUDEFLARE_OAUTH_TOKEN_URL", "http://[::ffff:10.0.0.1]/token", `config env CLAUDEFLARE_OAUTH_TOKEN_URL: must be an https URL: http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost), got "http://[::ffff:10.0.0.1]/token"`},
		{"origin", "CLAUDEFLARE_ALLOWED_ORIGINS", "https://ok.example,not an origin", `config env CLAUDEFLARE_ALLOWED_ORIGINS: invalid origin "not an origin" (want scheme://host[:port] or *)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e[tt.env] = tt.val
			// The file sets the key too: the env value is the one that is wrong.
			path := writeFile(t, "port = 9000\nretry_attempts = 2\n")
			ce := loadErr(t, Source{Path: path, Getenv: e.get})
			if ce.Env != tt.env || ce.File != "" || ce.Line != 0 {
				t.Errorf("got %+v", ce)
			}
			if ce.Error() != tt.want {
				t.Errorf("message\n got %s\nwant %s", ce.Error(), tt.want)
			}
		})
	}
}

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		flags map[string]string
		want  string
	}{
		{map[string]string{"log.payloads": "some"}, `config flag log.payloads: must be one of full, headers, off (got "some")`},
		{map[string]string{"port": "x"}, `config flag port: invalid integer "x"`},
		{map[string]string{"server.shutdown_grace": "5"}, `config flag server.shutdown_grace: missing unit in duration "5"`},
		{map[string]string{"no_such": "1"}, `config flag no_such: no such config key`},
		{map[string]string{"server": "1"}, `config flag server: no such config key`},
	}
	for _, tt := range tests {
		// The environment sets port too: the flag value is the one that is wrong.
		e := newEnv(t)
		e["CLAUDEFLARE_PORT"] = "9000"
		ce := loadErr(t, Source{Getenv: e.get, Flags: tt.flags})
		if !ce.Flag || ce.Error() != tt.want {
			t.Errorf("got %+v\n %s\nwant %s", ce, ce, tt.want)
		}
	}
}

// TestCleartextLoopback: http:// stays allowed to this machine (a local
// test upstream, a sidecar), https:// to any host.
func TestCleartextLoopback(t *testing.T) {
	for _, u := range []string{
		"http://127.0.0.1:8080", "http://127.9.9.9", "http://[::1]:9000/v1", "http://localhost:1234",
		"http://LOCALHOST", "http://localhost./x", "http://[::ffff:127.0.0.1]:80", "https://api.example.com",
		"https://10.0.0.1/token",
	} {
		e := newEnv(t)
		e["CLAUDEFLARE_UPSTREAM_URL"] = u
		e["CLAUDEFLARE_OAUTH_TOKEN_URL"] = u
		c, err := Load(Source{Getenv: e.get})
		if err != nil {
			t.Errorf("%s: %v", u, err)
			continue
		}
		if c.UpstreamURL != u || c.OAuthTokenURL != u {
			t.Errorf("%s: got %s %s", u, c.UpstreamURL, c.OAuthTokenURL)
		}
	}
}

func TestEmptyEnvIsUnset(t *testing.T) {
	e := newEnv(t)
	e["CLAUDEFLARE_PORT"] = ""
	e["PORT"] = ""
	e["CLAUDEFLARE_HOST"] = ""
	e["HOST"] = ""
	e["CLAUDEFLARE_DATA_DIR"] = ""
	path := writeFile(t, "port = 9000\n")
	c, err := Load(Source{Path: path, Getenv: e.get, Legacy: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 9000 || c.Host != "127.0.0.1" || c.DataDir != filepath.Join(e["HOME"], ".local/share/claudeflare") {
		t.Errorf("got port %d host %q data dir %q", c.Port, c.Host, c.DataDir)
	}
}

func TestConfigFileResolution(t *testing.T) {
	t.Run("missing default file is fine", func(t *testing.T) {
		c, err := Load(Source{Getenv: newEnv(t).get})
		if err != nil || c.File != "" {
			t.Fatalf("Load = %+v, %v", c, err)
		}
	})
	t.Run("missing --config file is an error", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nope.toml")
		e := loadErr(t, Source{Path: path, Getenv: newEnv(t).get})
		if e.File != path || e.Error() != "config "+path+": no such file (named by --config)" {
			t.Errorf("got %q", e)
		}
	})
	t.Run("missing CLAUDEFLARE_CONFIG_PATH file is an error", func(t *testing.T) {
		e := newEnv(t)
		e[EnvConfigPath] = filepath.Join(t.TempDir(), "nope.toml")
		ce := loadErr(t, Source{Getenv: e.get})
		if ce.Error() != "config "+e[EnvConfigPath]+": no such file (named by CLAUDEFLARE_CONFIG_PATH)" {
			t.Errorf("got %q", ce)
		}
	})
	t.Run("CLAUDEFLARE_CONFIG_PATH", func(t *testing.T) {
		e := newEnv(t)
		e[EnvConfigPath] = writeFile(t, "port = 9100\n")
		c, err := Load(Source{Getenv: e.get})
		if err != nil {
			t.Fatal(err)
		}
		if c.File != e[EnvConfigPath] || c.Port != 9100 {
			t.Errorf("File %q port %d", c.File, c.Port)
		}
	})
	t.Run("--config beats CLAUDEFLARE_CONFIG_PATH", func(t *testing.T) {
		e := newEnv(t)
		e[EnvConfigPath] = filepath.Join(t.TempDir(), "nope.toml")
		path := writeFile(t, "port = 9200\n")
		c, err := Load(Source{Path: path, Getenv: e.get})
		if err != nil {
			t.Fatal(err)
		}
		if c.File != path || c.Port != 9200 {
			t.Errorf("File %q port %d", c.File, c.Port)
		}
	})
	t.Run("XDG_CONFIG_HOME", func(t *testing.T) {
		e := newEnv(t)
		e["XDG_CONFIG_HOME"] = t.TempDir()
		path := filepath.Join(e["XDG_CONFIG_HOME"], "claudeflare", "claudeflare.toml")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("port = 9300\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(Source{Getenv: e.get})
		if err != nil {
			t.Fatal(err)
		}
		if c.File != path || c.Port != 9300 || (&loader{getenv: e.get}).defaultConfigPath() != path {
			t.Errorf("File %q port %d", c.File, c.Port)
		}
	})
	t.Run("HOME/.config", func(t *testing.T) {
		e := newEnv(t)
		path := filepath.Join(e["HOME"], ".config", "claudeflare", "claudeflare.toml")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("port = 9400\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(Source{Getenv: e.get})
		if err != nil {
			t.Fatal(err)
		}
		if c.File != path || c.Port != 9400 {
			t.Errorf("File %q port %d", c.File, c.Port)
		}
	})
	t.Run("unreadable default file is an error", func(t *testing.T) {
		e := newEnv(t)
		path := filepath.Join(e["HOME"], ".config", "claudeflare", "claudeflare.toml")
		if err := os.MkdirAll(path, 0o700); err != nil { // a directory
			t.Fatal(err)
		}
		ce := loadErr(t, Source{Getenv: e.get})
		if ce.File != path {
			t.Errorf("got %q", ce)
		}
	})
}

func TestDataDir(t *testing.T) {
	t.Run("XDG_DATA_HOME", func(t *testing.T) {
		e := newEnv(t)
		e["XDG_DATA_HOME"] = t.TempDir()
		c, err := Load(Source{Getenv: e.get})
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(e["XDG_DATA_HOME"], "claudeflare"); c.DataDir != want {
			t.Errorf("DataDir %q, want %q", c.DataDir, want)
		}
	})
	t.Run("relative in the file is from the file", func(t *testing.T) {
		path := writeFile(t, "data_dir = \"data\"\nidentity_file = \"keys/id.txt\"\n[server]\ntls_cert = \"c.pem\"\ntls_key = \"/etc/k.pem\"\n")
		c, err := Load(Source{Path: path, Getenv: newEnv(t).get})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Dir(path)
		if c.DataDir != filepath.Join(dir, "data") || c.IdentityPath() != filepath.Join(dir, "keys/id.txt") ||
			c.Server.TLSCert != filepath.Join(dir, "c.pem") || c.Server.TLSKey != "/etc/k.pem" {
			t.Errorf("got %q %q %q %q", c.DataDir, c.IdentityFile, c.Server.TLSCert, c.Server.TLSKey)
		}
	})
	t.Run("tilde", func(t *testing.T) {
		e := newEnv(t)
		path := writeFile(t, "data_dir = \"~/cf\"\n")
		c, err := Load(Source{Path: path, Getenv: e.get})
		if err != nil {
			t.Fatal(err)
		}
		if c.DataDir != filepath.Join(e["HOME"], "cf") {
			t.Errorf("DataDir %q", c.DataDir)
		}
	})
	t.Run("relative from env and flag is from the working directory", func(t *testing.T) {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t)
		e["CLAUDEFLARE_DATA_DIR"] = "envdir"
		c, err := Load(Source{Getenv: e.get})
		if err != nil {
			t.Fatal(err)
		}
		if c.DataDir != filepath.Join(wd, "envdir") {
			t.Errorf("DataDir %q", c.DataDir)
		}
		c, err = Load(Source{Getenv: e.get, Flags: map[string]string{"data_dir": "flagdir"}})
		if err != nil {
			t.Fatal(err)
		}
		if c.DataDir != filepath.Join(wd, "flagdir") {
			t.Errorf("DataDir %q", c.DataDir)
		}
	})
	t.Run("no HOME", func(t *testing.T) {
		e := loadErr(t, Source{Getenv: env{}.get})
		if e.Key != "data_dir" {
			t.Errorf("got %q", e)
		}
		c, err := Load(Source{Getenv: env{"CLAUDEFLARE_DATA_DIR": "/srv/cf"}.get})
		if err != nil || c.DataDir != "/srv/cf" {
			t.Errorf("Load = %v, %v", c, err)
		}
	})
}

func TestEnumsIgnoreCase(t *testing.T) {
	e := newEnv(t)
	e["CLAUDEFLARE_LOG_LEVEL"] = "WARN"
	e["CLAUDEFLARE_LB_STRATEGY"] = "Round-Robin"
	c, err := Load(Source{Getenv: e.get, Flags: map[string]string{"log.payloads": "Headers"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != "warn" || c.LBStrategy != "round-robin" || c.Log.Payloads != PayloadsHeaders {
		t.Errorf("got %q %q %q", c.LogLevel, c.LBStrategy, c.Log.Payloads)
	}
}

func TestDebugForcesLogLevel(t *testing.T) {
	e := newEnv(t)
	e["CLAUDEFLARE_DEBUG"] = "1"
	e["CLAUDEFLARE_LOG_LEVEL"] = "warn"
	c, err := Load(Source{Getenv: e.get})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Debug || c.LogLevel != "debug" || c.SlogLevel().String() != "DEBUG" {
		t.Errorf("debug %v level %q", c.Debug, c.LogLevel)
	}
}

func TestDurationsInFile(t *testing.T) {
	path := writeFile(t, `
[retention]
payloads_max_age = "30d"
requests_max_age = "1w2d"
interval = "0"

[tokens]
refresh_margin = "45m"

[log]
flush_interval = "1.5s"
`)
	c, err := Load(Source{Path: path, Getenv: newEnv(t).get})
	if err != nil {
		t.Fatal(err)
	}
	if c.Retention.PayloadsMaxAge != Duration(30*Day) || c.Retention.RequestsMaxAge != Duration(9*Day) ||
		c.Retention.Interval != 0 || c.Tokens.RefreshMargin != Duration(45*time.Minute) ||
		c.Log.FlushInterval.Std() != 1500*time.Millisecond {
		t.Errorf("got %+v %+v %+v", c.Retention, c.Tokens, c.Log)
	}
}

func TestRedactors(t *testing.T) {
	path := writeFile(t, "[log]\nredact = ['secret-[0-9]+']\n")
	c, err := Load(Source{Path: path, Getenv: newEnv(t).get})
	if err != nil {
		t.Fatal(err)
	}
	rs := c.Redactors()
	if len(rs) != 1 || rs[0].String() != "secret-[0-9]+" || !rs[0].MatchString("a secret-42") {
		t.Errorf("Redactors = %v", rs)
	}

	path = writeFile(t, "[log]\nredact = ['x*']\n")
	if e := loadErr(t, Source{Path: path, Getenv: newEnv(t).get}); e.Key != "log.redact" || e.Line != 2 {
		t.Errorf("got %v", e)
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default does not validate: %v", err)
	}
	c.RateLimit.CooldownMax = Duration(time.Second)
	err := c.Validate()
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "ratelimit.cooldown_max" ||
		err.Error() != "config: ratelimit.cooldown_max: must not be less than ratelimit.cooldown_initial (30s)" {
		t.Errorf("got %v", err)
	}
}

func TestAccessors(t *testing.T) {
	c := Default()
	c.Host, c.Port = "::1", 0
	if c.Addr() != "[::1]:0" {
		t.Errorf("Addr %q", c.Addr())
	}
	c.IdentityFile = "/k/id.txt"
	if c.IdentityPath() != "/k/id.txt" {
		t.Errorf("IdentityPath %q", c.IdentityPath())
	}
	for _, tt := range []struct {
		format   string
		terminal bool
		json     bool
	}{
		{"auto", true, false}, {"auto", false, true}, {"json", true, true}, {"text", false, false},
	} {
		c.LogFormat = tt.format
		if c.JSONLogs(tt.terminal) != tt.json {
			t.Errorf("JSONLogs(%q, terminal %v) != %v", tt.format, tt.terminal, tt.json)
		}
	}
}

func TestSettingsTable(t *testing.T) {
	// The predecessor's names the daemon still reads; CLIENT_ID is gone.
	wantLegacy := map[string]string{
		"HOST": "host", "PORT": "port", "LB_STRATEGY": "lb_strategy",
		"SESSION_DURATION_MS": "session_duration_ms", "RETRY_ATTEMPTS": "retry_attempts",
		"RETRY_DELAY_MS": "retry_delay_ms", "RETRY_BACKOFF": "retry_backoff",
		"LOG_LEVEL": "log_level", "LOG_FORMAT": "log_format", "ALLOWED_ORIGINS": "allowed_origins",
	}
	legacy := map[string]string{}
	for _, s := range Settings() {
		if s.LegacyEnv != "" {
			legacy[s.LegacyEnv] = s.Key
		}
	}
	if !reflect.DeepEqual(legacy, wantLegacy) {
		t.Errorf("legacy env table\n got %v\nwant %v", legacy, wantLegacy)
	}
	// Every setting has its CLAUDEFLARE_ variable, by the one rule; the
	// ones documented before the rule keep their names.
	for key, want := range map[string]string{
		"data_dir": "CLAUDEFLARE_DATA_DIR", "debug": "CLAUDEFLARE_DEBUG", "client_id": "CLAUDEFLARE_CLIENT_ID",
		"identity_file": "CLAUDEFLARE_IDENTITY_FILE", "upstream_url": "CLAUDEFLARE_UPSTREAM_URL",
		"oauth_token_url": "CLAUDEFLARE_OAUTH_TOKEN_URL", "port": "CLAUDEFLARE_PORT",
		"server.max_body_bytes": "CLAUDEFLARE_SERVER_MAX_BODY_BYTES", "log.payloads": "CLAUDEFLARE_LOG_PAYLOADS",
		"retention.requests_max_age": "CLAUDEFLARE_RETENTION_REQUESTS_MAX_AGE",
	} {
		if s := settingByKey[key]; s == nil || s.Env != want {
			t.Errorf("%s: got %+v, want env %s", key, s, want)
		}
	}
	seen := map[string]string{}
	for _, s := range Settings() {
		if want := "CLAUDEFLARE_" + strings.ToUpper(strings.ReplaceAll(s.Key, ".", "_")); s.Env != want {
			t.Errorf("%s: env %q, want %q", s.Key, s.Env, want)
		}
		if other, dup := seen[s.Env]; dup {
			t.Errorf("%s and %s share the variable %s", s.Key, other, s.Env)
		}
		seen[s.Env] = s.Key
	}
}
