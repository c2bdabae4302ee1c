package access_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/daemon"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// daemonStack is the real daemon, built by daemon.New as `claudeflare
// daemon` builds it (the guard, /metrics, the proxy, the upstream reached
// through upstream.Transport), listening on 127.0.0.1, everything
// logging at debug level into logs.
type daemonStack struct {
	t     *testing.T
	api   *fakeapi.Server
	cfg   *config.Config
	v     *vault.Vault
	akey  []byte // the vault's audit key
	vdb   *store.DB
	ldb   *store.DB
	d     *daemon.Daemon
	url   string
	clk   *clock
	logs  *syncBuffer
	extra []string // more secrets the logs must not contain
}

func newDaemonStack(t *testing.T, mod func(*config.Config)) *daemonStack {
	t.Helper()
	api := fakeapi.New()
	t.Cleanup(api.Close)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.UpstreamURL = api.URL
	cfg.OAuthTokenURL = api.TokenURL()
	cfg.Host, cfg.Port = "127.0.0.1", 0
	cfg.LogLevel = "debug"
	cfg.Log.FlushInterval = config.Duration(10 * time.Millisecond)
	if mod != nil {
		mod(&cfg)
	}
	d := &daemonStack{t: t, api: api, cfg: &cfg, clk: newClock(), logs: &syncBuffer{}}
	ctx := context.Background()
	var err error
	if d.vdb, err = store.OpenVault(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	if d.ldb, err = store.OpenLog(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(d.logs, &slog.HandlerOptions{Level: cfg.SlogLevel()}))
	if d.v, err = vault.Open(ctx, d.vdb, vault.KeySource{DataDir: cfg.DataDir}, vault.Options{Create: true, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	// An OAuth account whose first use refreshes its token at the token
	// endpoint, and an API-key account.
	if _, err := d.v.AddAccount(ctx, vault.NewAccount{Name: "work", Kind: store.KindOAuth, Mode: "max", Tier: 1},
		vault.Secrets{RefreshToken: api.NewOAuthAccount("work")}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.v.AddAccount(ctx, vault.NewAccount{Name: "pool", Kind: store.KindAPIKey, Priority: 1, Tier: 1},
		vault.Secrets{APIKey: api.NewAPIKey("pool")}); err != nil {
		t.Fatal(err)
	}

	d.akey = auditKey(t, d.v)
	if d.d, err = daemon.New(ctx, daemon.Options{Config: d.cfg, Vault: d.v, VaultDB: d.vdb, LogDB: d.ldb, AuditKey: d.akey,
		Logger: logger, Now: d.clk.Now, PollInterval: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := d.d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	d.url = d.d.URL()
	t.Cleanup(d.close)
	return d
}

// pauseAndServe pauses account name, serves one request on the others
// (which moves the session there), and resumes it, waiting each time until
// the proxy has seen the change.
func (d *daemonStack) pauseAndServe(ctx context.Context, name, key string) {
	d.t.Helper()
	seen := func(paused bool) func() bool {
		return func() bool {
			for _, a := range d.d.Proxy().Accounts() {
				if a.Name == name {
					return a.Paused == paused
				}
			}
			return false
		}
	}
	if err := store.SetPaused(ctx, d.vdb, name, true, time.Now()); err != nil {
		d.t.Fatal(err)
	}
	waitFor(d.t, name+" paused", seen(true))
	expectStatus(d.t, d.message(false, "x-api-key", key), 200, "")
	if err := store.SetPaused(ctx, d.vdb, name, false, time.Now()); err != nil {
		d.t.Fatal(err)
	}
	waitFor(d.t, name+" resumed", seen(false))
}

// waitKeysSeen waits until the guard, which already requires keys, knows
// every one of keys: /metrics answers a known key 200 or 403 (by its
// role), an unknown one 401.
func (d *daemonStack) waitKeysSeen(keys ...string) {
	d.t.Helper()
	for i, k := range keys {
		waitFor(d.t, fmt.Sprintf("client key %d of %d to be seen by the daemon", i+1, len(keys)), func() bool {
			return d.do("GET", "/metrics", "", "x-api-key", k).status != http.StatusUnauthorized
		})
	}
}

func (d *daemonStack) close() {
	if d.url == "" {
		return
	}
	d.url = ""
	if err := d.d.Shutdown(context.Background()); err != nil {
		d.t.Error(err)
	}
	d.vdb.Close()
	d.ldb.Close()
}

func (d *daemonStack) do(method, path, body string, headers ...string) reply {
	d.t.Helper()
	req, err := http.NewRequest(method, d.url+path, strings.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func (d *daemonStack) message(stream bool, headers ...string) reply {
	d.t.Helper()
	body := `{"model":"claude-sonnet-4-5","max_tokens":32,"stream":false,"messages":[{"role":"user","content":"hi"}]}`
	if stream {
		body = strings.Replace(body, `"stream":false`, `"stream":true`, 1)
	}
	return d.do("POST", "/v1/messages?beta=true", body, headers...)
}

func expectStatus(t *testing.T, r reply, status int, errType string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if errType != "" && r.errType() != errType {
		t.Fatalf("error type %q, want %q: %s", r.errType(), errType, r.body)
	}
}

// TestDaemonAccessFlow runs every access rule against the real proxy and
// the fake upstream, logging at debug level, then searches the logs (and
// the data dir) for every secret the run used.
func TestDaemonAccessFlow(t *testing.T) {
	d := newDaemonStack(t, func(c *config.Config) {
		c.Limits.RequestsPerMinute = 6
		c.AllowedOrigins = []string{"https://dash.example"}
	})
	ctx := context.Background()

	// No keys yet: open to loopback clients; a client's own placeholder key
	// never reaches the upstream.
	r := d.message(false, "x-api-key", "sk-ant-client-placeholder-0123456789")
	expectStatus(t, r, 200, "")
	if !strings.Contains(r.body, `"usage"`) {
		t.Fatalf("not an upstream answer: %s", r.body)
	}

	apiKey, _, err := access.CreateKey(ctx, d.vdb, d.akey, "claude-code", access.RoleAPI, "cli:test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	viewer, _, _ := access.CreateKey(ctx, d.vdb, d.akey, "dash", access.RoleViewer, "cli:test", time.Now())
	admin, _, _ := access.CreateKey(ctx, d.vdb, d.akey, "ops", access.RoleAdmin, "cli:test", time.Now())
	wrong := "cf_" + strings.Repeat("Q", 43)
	d.extra = append(d.extra, apiKey, viewer, admin, wrong)
	// The daemon picks the keys up by itself within its poll. A poll may
	// run between two of the CreateKey calls above: wait until every key
	// is known, on a route that needs a key but is not counted against
	// the per-minute limit checked below.
	waitFor(t, "keys to be required", func() bool { return d.message(false).status == 401 })
	d.waitKeysSeen(apiKey, viewer, admin)

	r = d.message(false)
	expectStatus(t, r, 401, "authentication_error")
	if r.header.Get("X-Should-Retry") != "false" {
		t.Fatal("401 without x-should-retry: false")
	}
	expectStatus(t, d.message(false, "x-api-key", wrong), 401, "authentication_error")
	expectStatus(t, d.message(false, "Authorization", "Bearer "+wrong), 401, "authentication_error")
	expectStatus(t, d.do("GET", "/health", ""), 200, "")
	expectStatus(t, d.do("HEAD", "/", ""), 200, "")

	r = d.message(false, "x-api-key", apiKey)
	expectStatus(t, r, 200, "")
	if r.header.Get("X-Claudeflare-Request-Id") == "" {
		t.Fatal("no request id")
	}
	r = d.message(true, "Authorization", "Bearer "+apiKey)
	expectStatus(t, r, 200, "")
	if !strings.Contains(r.header.Get("Content-Type"), "text/event-stream") || !strings.Contains(r.body, "message_stop") {
		t.Fatalf("stream: %v %s", r.header, r.body)
	}

	// Permissions.
	expectStatus(t, d.message(false, "x-api-key", viewer), 403, "permission_error")
	expectStatus(t, d.do("GET", "/api/accounts", "", "x-api-key", apiKey), 403, "permission_error")
	r = d.do("GET", "/api/accounts", "", "x-api-key", viewer)
	expectStatus(t, r, 200, "")
	if !strings.Contains(r.body, `"name":"work"`) || r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("/api/accounts: %v %s", r.header, r.body)
	}
	// The log's client column names the client key, as the daemon fills it.
	waitFor(t, "the request log", func() bool {
		body := d.do("GET", "/api/requests?limit=10", "", "x-api-key", viewer).body
		return strings.Contains(body, `"account":"work"`) && strings.Contains(body, `"client":"claude-code"`)
	})
	// /metrics is the daemon's, behind metrics.view.
	expectStatus(t, d.do("GET", "/metrics", "", "x-api-key", apiKey), 403, "permission_error")
	if r := d.do("GET", "/metrics", "", "x-api-key", viewer); r.status != 200 || !strings.Contains(r.body, "claudeflare_") {
		t.Fatalf("/metrics: %d %.200s", r.status, r.body)
	}
	r = d.do("GET", "/api/stats", "", "x-api-key", admin)
	expectStatus(t, r, 200, "")
	expectStatus(t, d.do("POST", "/api/accounts/work/pause", "", "x-api-key", viewer), 403, "permission_error")
	expectStatus(t, d.do("POST", "/api/accounts/work/pause", "", "x-api-key", admin), 200, "")
	expectStatus(t, d.do("POST", "/api/accounts/work/resume", "", "x-api-key", admin), 200, "")

	// CORS.
	r = d.do("OPTIONS", "/v1/messages", "", "Origin", "https://dash.example", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "x-api-key,content-type")
	expectStatus(t, r, 204, "")
	if r.header.Get("Access-Control-Allow-Origin") != "https://dash.example" {
		t.Fatalf("preflight: %v", r.header)
	}
	expectStatus(t, d.do("OPTIONS", "/v1/messages", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST"), 403, "permission_error")
	expectStatus(t, d.message(false, "x-api-key", apiKey, "Origin", "https://evil.example"), 403, "permission_error")
	r = d.message(false, "x-api-key", apiKey, "Origin", "https://dash.example")
	expectStatus(t, r, 200, "")
	if r.header.Get("Access-Control-Allow-Origin") != "https://dash.example" {
		t.Fatal("no CORS header on an allowed origin's answer")
	}

	// Limits: 6 a minute per key; the api key has used 3 so far (the
	// request refused for its origin did not count).
	expectStatus(t, d.message(false, "x-api-key", apiKey), 200, "")
	expectStatus(t, d.message(false, "x-api-key", apiKey), 200, "")
	expectStatus(t, d.message(false, "x-api-key", apiKey), 200, "")
	r = d.message(false, "x-api-key", apiKey)
	expectStatus(t, r, 429, "rate_limit_error")
	if r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "not an Anthropic rate limit") {
		t.Fatalf("client limit: %v %s", r.header, r.body)
	}
	d.clk.Add(time.Minute)
	expectStatus(t, d.message(false, "x-api-key", apiKey), 200, "")

	// Put the session on "work": whether a request landed on "pool" while
	// "work" was paused above depends on when the proxy's poll ran.
	d.pauseAndServe(ctx, "pool", admin)

	// An account whose refresh token the token endpoint refuses, with an
	// error text that quotes secrets: it needs a new login (audited), the
	// request moves to the other account, and nothing secret is logged.
	echoed := "sk-ant-oat01-" + strings.Repeat("S", 40)
	d.extra = append(d.extra, echoed)
	d.api.InjectTokenFault(fakeapi.TokenFault{Status: 400,
		Body: `{"error":"invalid_grant","error_description":"refresh token ` + d.api.AllTokens()[0] + ` revoked; ` + echoed + `"}`})
	d.api.Inject(fakeapi.Fault{Account: "work", Kind: fakeapi.FaultStatus, Status: 401})
	r = d.message(false, "x-api-key", admin)
	expectStatus(t, r, 200, "")
	waitFor(t, "the needs-login audit row", func() bool {
		var found bool
		audit.List(ctx, d.vdb, time.Time{}, func(e audit.Entry) error {
			found = found || e.Action == audit.ActionAccountNeedsLogin
			return nil
		})
		return found
	})
	// One row, by the daemon, saying which account and why (fed by the
	// proxy's needs-login event, not by a poll of the accounts).
	var needs []string
	audit.List(ctx, d.vdb, time.Time{}, func(e audit.Entry) error {
		if e.Action == audit.ActionAccountNeedsLogin {
			needs = append(needs, e.Actor+" "+e.Detail)
		}
		return nil
	})
	if len(needs) != 1 || needs[0] != `daemon account "work" needs a new login: refresh token rejected (invalid_grant)` {
		t.Fatalf("needs-login rows: %q", needs)
	}
	// The same event is counted by metrics (before the row is written).
	if r := d.do("GET", "/metrics", "", "x-api-key", viewer); !strings.Contains(r.body, `claudeflare_account_events_total{account="work",event="needs_login"} 1`) {
		t.Fatalf("/metrics: the needs-login event is not counted: %d", r.status)
	}

	// Revoked: refused within the poll.
	if _, err := access.RevokeKey(ctx, d.vdb, d.akey, "claude-code", "cli:test", time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revoked key to be refused", func() bool { return d.message(false, "x-api-key", apiKey).status == 401 })

	d.close()
	// Audit: created, revoked, paused, resumed, new address, failed auth.
	db, err := store.OpenVault(d.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var actions []string
	audit.List(ctx, db, time.Time{}, func(e audit.Entry) error {
		actions = append(actions, e.Action)
		t.Logf("audit: %s %s %s", e.Actor, e.Action, e.Detail)
		return nil
	})
	for _, a := range []string{audit.ActionClientKeyCreated, audit.ActionClientKeyRevoked, audit.ActionAccountPaused,
		audit.ActionAccountResumed, audit.ActionClientKeyNewAddr, audit.ActionAuthFailed, audit.ActionAccountNeedsLogin} {
		if !contains(actions, a) {
			t.Errorf("no %s in the audit log: %v", a, actions)
		}
	}
	if _, err := audit.Verify(ctx, db, d.akey, nil); err != nil {
		t.Fatal(err)
	}

	// No secret in any log line, nor in plaintext in the data dir.
	logs := d.logs.String()
	if !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Fatal("no debug logs: the search below would prove nothing")
	}
	secrets := append(d.api.AllTokens(), d.extra...)
	if len(secrets) < 8 {
		t.Fatalf("only %d secrets to look for", len(secrets))
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a secret (%.6s...) appears in the logs", s)
		}
	}
	err = filepath.WalkDir(d.cfg.DataDir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("%s holds a secret in plaintext", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("search the data dir for secrets: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
