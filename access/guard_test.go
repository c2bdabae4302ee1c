package access_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

func TestOpenWithoutKeysOnLoopback(t *testing.T) {
	h := newHarness(t, nil)
	h.expect(h.do("POST", "/v1/messages"), 200, "")
	h.expect(h.do("GET", "/api/accounts"), 200, "")
	h.expect(h.do("GET", "/metrics"), 200, "")
	// A DNS name in Host is what a DNS-rebinding page sends.
	h.expect(h.do("GET", "/api/accounts", "Host", "evil.example:8080"), 403, "permission_error")
	h.expect(h.do("GET", "/api/accounts", "Host", "localhost:8080"), 200, "")
	h.expect(h.do("GET", "/health", "Host", "evil.example:8080"), 200, "")
}

func TestWithoutKeysNonLoopbackRefused(t *testing.T) {
	h := newHarness(t, nil)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	for _, tc := range []struct {
		path string
		want int
	}{{"/v1/messages", 403}, {"/api/accounts", 403}, {"/health", 200}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", tc.path, nil)
		req.RemoteAddr = "192.0.2.7:41000"
		h.g.Wrap(next).ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s from 192.0.2.7 without keys: %d, want %d", tc.path, rec.Code, tc.want)
		}
	}
}

func TestClientKeys(t *testing.T) {
	h := newHarness(t, nil)
	apiKey := h.key("claude-code", access.RoleAPI)
	viewer := h.key("grafana", access.RoleViewer)
	admin := h.key("ops", access.RoleAdmin)

	// No key, a wrong key: 401, and Claude Code must not retry.
	for _, hdr := range [][]string{
		nil,
		{"x-api-key", "cf_wrongwrongwrongwrongwrongwrongwrongwrongwro"},
		{"Authorization", "Bearer nonsense"},
		{"Authorization", "Basic " + apiKey},
	} {
		r := h.do("POST", "/v1/messages", hdr...)
		h.expect(r, 401, "authentication_error")
		if r.header.Get("X-Should-Retry") != "false" {
			t.Fatalf("401 without x-should-retry: false: %v", r.header)
		}
		if r.header.Get("X-Test-Seen") != "" {
			t.Fatal("a refused request reached the upstream handler")
		}
		if r.header.Get("X-Claudeflare-Request-Id") == "" {
			t.Fatal("no request id on the guard's answer")
		}
		// The same bytes the proxy's own errors have: Anthropic's key
		// order, type first.
		if !strings.HasPrefix(r.body, `{"type":"error","error":{"type":"authentication_error","message":`) {
			t.Fatalf("401 body %s", r.body)
		}
	}

	// The right key in either header.
	r := h.do("POST", "/v1/messages?beta=true", "x-api-key", apiKey)
	h.expect(r, 200, "")
	if r.header.Get("X-Test-Client") != "claude-code" {
		t.Fatalf("client not passed on: %q", r.header.Get("X-Test-Client"))
	}
	h.expect(h.do("POST", "/v1/messages", "Authorization", "Bearer "+apiKey), 200, "")
	// An Anthropic key next to the client key is fine.
	h.expect(h.do("POST", "/v1/messages", "x-api-key", "sk-ant-api03-xyz", "Authorization", "Bearer "+apiKey), 200, "")

	// Public routes.
	h.expect(h.do("GET", "/health"), 200, "")
	h.expect(h.do("GET", "/"), 200, "")
	h.expect(h.do("HEAD", "/"), 200, "")
	h.expect(h.do("POST", "/"), 401, "authentication_error")
	h.expect(h.do("GET", "/other"), 401, "authentication_error")

	// Permissions.
	for _, tc := range []struct {
		method, path, key string
		want              int
	}{
		{"GET", "/api/accounts", apiKey, 403},
		{"GET", "/api/accounts", viewer, 200},
		{"GET", "/api/stats", viewer, 200},
		{"GET", "/api/requests", viewer, 200},
		{"GET", "/api/requests", apiKey, 403},
		{"POST", "/v1/messages", viewer, 403},
		{"GET", "/metrics", viewer, 200},
		{"GET", "/metrics", apiKey, 403},
		{"POST", "/api/accounts/work/pause", viewer, 403},
		{"POST", "/api/accounts/work/pause", apiKey, 403},
		{"POST", "/api/accounts/nobody/pause", admin, 404},
		{"POST", "/v1/messages", admin, 200},
		// Not canonical: refused before anything is classified.
		{"GET", "/api/../api/accounts", apiKey, 400},
		{"GET", "/v1/../api/requests", apiKey, 400},
	} {
		r := h.do(tc.method, tc.path, "x-api-key", tc.key)
		if r.status != tc.want {
			t.Errorf("%s %s: %d, want %d (%s)", tc.method, tc.path, r.status, tc.want, r.body)
		}
		if tc.want == 403 && r.errType() != "permission_error" {
			t.Errorf("%s %s: error type %q", tc.method, tc.path, r.errType())
		}
	}
}

func TestMetricsPublic(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Metrics.Public = true })
	h.key("k", access.RoleAPI)
	h.expect(h.do("GET", "/metrics"), 200, "")
	h.expect(h.do("GET", "/api/stats"), 401, "authentication_error")
}

func TestRevokedKeySeenWithinSeconds(t *testing.T) {
	h := newHarness(t, nil)
	h.g.Start()
	ctx := context.Background()
	// Created in another process (the CLI): the poll picks it up.
	key, _, err := access.CreateKey(ctx, h.vdb, h.akey, "ci", access.RoleAPI, "cli:test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new key to be required", func() bool { return h.do("POST", "/v1/messages").status == 401 })
	h.expect(h.do("POST", "/v1/messages", "x-api-key", key), 200, "")

	if _, err := access.RevokeKey(ctx, h.vdb, h.akey, "ci", "cli:test", time.Now()); err != nil {
		t.Fatal(err)
	}
	// Revoking the only key would reopen a loopback proxy; keep another.
	other, _, err := access.CreateKey(ctx, h.vdb, h.akey, "other", access.RoleAPI, "cli:test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revoked key to be refused", func() bool { return h.do("POST", "/v1/messages", "x-api-key", key).status == 401 })
	r := h.do("POST", "/v1/messages", "x-api-key", key)
	h.expect(r, 401, "authentication_error")
	// The same answer as for an unknown key (the audit log has the reason).
	if strings.Contains(r.body, "revoked") {
		t.Fatalf("revoked key message tells the key once existed: %s", r.body)
	}
	h.expect(h.do("POST", "/v1/messages", "x-api-key", other), 200, "")

	// The name of a revoked key may be used again.
	if _, _, err := access.CreateKey(ctx, h.vdb, h.akey, "ci", access.RoleAPI, "cli:test", time.Now()); err != nil {
		t.Fatalf("reuse a revoked key's name: %v", err)
	}
	if _, _, err := access.CreateKey(ctx, h.vdb, h.akey, "ci", access.RoleAPI, "cli:test", time.Now()); err == nil {
		t.Fatal("two live keys with one name")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, what, cond)
}

func TestAllowIPs(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Server.AllowIPs = []string{"10.0.0.0/8", "192.0.2.1"} })
	key := h.key("k", access.RoleAdmin)
	// Refused before anything else: even /health, even with a valid key.
	for _, p := range []string{"/health", "/v1/messages", "/api/accounts"} {
		r := h.do("GET", p, "x-api-key", key)
		h.expect(r, 403, "permission_error")
		if !strings.Contains(r.body, "allow_ips") {
			t.Fatalf("message does not say why: %s", r.body)
		}
	}
	h2 := newHarness(t, func(c *config.Config) { c.Server.AllowIPs = []string{"127.0.0.0/8"} })
	h2.expect(h2.do("GET", "/health"), 200, "")
}

func TestCORS(t *testing.T) {
	h := newHarness(t, nil)
	// None configured: no CORS headers, preflights refused, foreign origins refused.
	r := h.do("OPTIONS", "/v1/messages", "Origin", "https://app.example", "Access-Control-Request-Method", "POST")
	h.expect(r, 403, "permission_error")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS header without ALLOWED_ORIGINS")
	}
	h.expect(h.do("POST", "/v1/messages", "Origin", "https://evil.example"), 403, "permission_error")
	// A page served by the proxy itself on a loopback address.
	r = h.do("GET", "/api/accounts", "Origin", h.srv.URL)
	h.expect(r, 200, "")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS header for a same-origin request")
	}

	h = newHarness(t, func(c *config.Config) { c.AllowedOrigins = []string{"https://app.example"} })
	key := h.key("web", access.RoleAdmin)
	r = h.do("OPTIONS", "/v1/messages", "Origin", "https://app.example", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "x-api-key, content-type, anthropic-version")
	h.expect(r, 204, "")
	if r.header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") ||
		r.header.Get("Access-Control-Allow-Headers") != "x-api-key, content-type, anthropic-version" {
		t.Fatalf("preflight headers: %v", r.header)
	}
	if r.header.Get("X-Test-Seen") != "" {
		t.Fatal("preflight reached the upstream")
	}
	r = h.do("OPTIONS", "/v1/messages", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
	h.expect(r, 403, "permission_error")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS header for an unlisted origin")
	}
	r = h.do("POST", "/v1/messages", "Origin", "https://app.example", "x-api-key", key)
	h.expect(r, 200, "")
	if r.header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("no CORS header on an allowed request: %v", r.header)
	}
	h.expect(h.do("POST", "/v1/messages", "Origin", "https://evil.example", "x-api-key", key), 403, "permission_error")
	// Still authenticated: an allowed origin is not a credential.
	h.expect(h.do("POST", "/v1/messages", "Origin", "https://app.example"), 401, "authentication_error")
}

func TestSecurityHeaders(t *testing.T) {
	h := newHarness(t, nil)
	check := func(r reply, what string) {
		t.Helper()
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if r.header.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", what, k, r.header.Get(k), v)
			}
		}
	}
	check(h.do("GET", "/"), "GET /")
	check(h.do("GET", "/health"), "/health")
	r := h.do("GET", "/api/accounts")
	check(r, "/api/accounts")
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("/api/ without Cache-Control: no-store")
	}
	if r := h.do("GET", "/api/nothing"); r.status != 404 || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("/api/nothing: %d %v", r.status, r.header)
	}
	// /v1/* passes the upstream's headers through untouched ...
	if r := h.do("POST", "/v1/messages"); r.header.Get("X-Frame-Options") != "" {
		t.Errorf("security headers added to an upstream answer")
	}
	// ... but the guard's own answers there carry them.
	h.key("k", access.RoleAPI)
	check(h.do("POST", "/v1/messages"), "401 on /v1")
}

func TestRequestsPerMinute(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Limits.RequestsPerMinute = 2 })
	a := h.key("a", access.RoleAPI)
	b := h.key("b", access.RoleAPI)
	h.expect(h.do("POST", "/v1/messages", "x-api-key", a), 200, "")
	h.expect(h.do("POST", "/v1/messages", "x-api-key", a), 200, "")
	r := h.do("POST", "/v1/messages", "x-api-key", a)
	h.expect(r, 429, "rate_limit_error")
	if r.header.Get("Retry-After") != "30" || r.header.Get("X-Should-Retry") != "true" || r.header.Get("X-Claudeflare-Limit") != "client" {
		t.Fatalf("429 headers: %v", r.header)
	}
	if !strings.Contains(r.body, "claudeflare") || !strings.Contains(r.body, "not an Anthropic rate limit") {
		t.Fatalf("429 message does not say whose limit it is: %s", r.body)
	}
	// Another key has its own budget; public routes are not counted.
	h.expect(h.do("POST", "/v1/messages", "x-api-key", b), 200, "")
	h.expect(h.do("GET", "/health"), 200, "")

	h.clk.Add(30 * time.Second)
	h.expect(h.do("POST", "/v1/messages", "x-api-key", a), 200, "")
	h.expect(h.do("POST", "/v1/messages", "x-api-key", a), 429, "rate_limit_error")
	h.clk.Add(time.Minute)
	h.expect(h.do("POST", "/v1/messages", "x-api-key", a), 200, "")
	h.expect(h.do("POST", "/v1/messages", "x-api-key", a), 200, "")
}

func TestRequestsPerMinuteByAddressWithoutKeys(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Limits.RequestsPerMinute = 1 })
	h.expect(h.do("POST", "/v1/messages"), 200, "")
	h.expect(h.do("POST", "/v1/messages"), 429, "rate_limit_error")
	h.clk.Add(time.Minute)
	h.expect(h.do("POST", "/v1/messages"), 200, "")
}

func TestConcurrentStreams(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Limits.ConcurrentStreams = 1 })
	key := h.key("a", access.RoleAPI)
	// The held request is released whatever happens, before the
	// harness's server is closed (cleanups run last first): a failing
	// check below must not leave it, and the run, hanging.
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(h.release) }) }
	t.Cleanup(release)
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		h.do("POST", "/v1/slow", "x-api-key", key)
	}()
	select {
	case <-h.inSlow:
	case <-slowDone:
		t.Fatal("the slow request ended before it reached the handler")
	}
	r := h.do("POST", "/v1/messages", "x-api-key", key)
	h.expect(r, 429, "rate_limit_error")
	if !strings.Contains(r.body, "concurrent_streams") || r.header.Get("Retry-After") == "" {
		t.Fatalf("429: %v %s", r.header, r.body)
	}
	// Once the held stream ends, its slot is free again.
	release()
	<-slowDone
	h.expect(h.do("POST", "/v1/messages", "x-api-key", key), 200, "")
}

func TestAuditOfKeyUse(t *testing.T) {
	h := newHarness(t, nil)
	key := h.key("laptop", access.RoleAPI)
	for range 5 {
		h.do("POST", "/v1/messages", "x-api-key", "cf_guessguessguessguessguessguessguessguessgue")
	}
	h.do("POST", "/v1/messages")
	h.expect(h.do("POST", "/v1/messages", "x-api-key", key), 200, "")
	h.expect(h.do("POST", "/v1/messages", "x-api-key", key), 200, "")
	if err := h.g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows := h.auditRows()
	if n := countPrefix(rows, "auth.failed"); n != 1 {
		t.Fatalf("failed authentications: %d rows, want 1 for the minute: %q", n, rows)
	}
	if countPrefix(rows, "6 failed authentications from 127.0.0.1") != 1 || countPrefix(rows, "invalid key: 5") != 1 {
		t.Fatalf("aggregate row: %q", rows)
	}
	if countPrefix(rows, `client_key.new_address: client key "laptop" used from a new address 127.0.0.1`) != 1 {
		t.Fatalf("new address row: %q", rows)
	}
	if countPrefix(rows, `client_key.created: client key "laptop"`) != 1 {
		t.Fatalf("creation row: %q", rows)
	}
	keys, err := access.ListKeys(context.Background(), h.vdb, h.akey)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || !keys[0].LastUsedAt.Equal(h.clk.Now()) {
		t.Fatalf("last used not recorded: %+v", keys)
	}

	// The same address again is not news, even after a restart.
	g2, err := access.New(context.Background(), access.Options{Config: h.cfg, VaultDB: h.vdb, AuditKey: h.akey, Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g2.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/v1/messages", nil)
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := g2.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := countPrefix(h.auditRows(), "client_key.new_address"); n != 1 {
		t.Fatalf("new address audited %d times", n)
	}
	if st, err := audit.Verify(context.Background(), h.vdb, h.akey, nil); err != nil || st.Entries != len(h.auditRows()) {
		t.Fatalf("verify: %d %v", st.Entries, err)
	}
}

func TestAdminAPI(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	if _, err := h.v.AddAccount(ctx, vault.NewAccount{Name: "work", Kind: store.KindOAuth, Mode: "max", Priority: 1, Tier: 5}, vault.Secrets{RefreshToken: "rt-secret-1", AccessToken: "at-secret-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.v.AddAccount(ctx, vault.NewAccount{Name: "pool", Kind: store.KindAPIKey, Tier: 1}, vault.Secrets{APIKey: "sk-ant-secret-pool"}); err != nil {
		t.Fatal(err)
	}
	now := h.clk.Now()
	var reqs []store.Request
	for i := range 5 {
		st := 200
		if i == 4 {
			st = 429
		}
		reqs = append(reqs, store.Request{ID: "req" + string(rune('a'+i)), TS: now.Add(time.Duration(i-5) * time.Minute).UnixMilli(), Method: "POST",
			Path: "/v1/messages", Model: "claude-x", Account: "work", Status: st, InputTokens: 10, OutputTokens: 3})
	}
	if err := store.InsertRequests(ctx, h.ldb, reqs, nil); err != nil {
		t.Fatal(err)
	}
	admin := h.key("ops", access.RoleAdmin)

	var accts struct {
		Accounts []map[string]any `json:"accounts"`
	}
	r := h.do("GET", "/api/accounts", "x-api-key", admin)
	h.expect(r, 200, "")
	if err := json.Unmarshal([]byte(r.body), &accts); err != nil || len(accts.Accounts) != 2 {
		t.Fatalf("accounts: %v %s", err, r.body)
	}
	if a := accts.Accounts[1]; a["name"] != "work" || a["requests"] != float64(5) || a["status"] != "ok" || a["tier"] != float64(5) {
		t.Fatalf("work: %v", a)
	}
	for _, s := range []string{"rt-secret", "at-secret", "sk-ant-secret"} {
		if strings.Contains(r.body, s) {
			t.Fatal("a secret in /api/accounts")
		}
	}

	var stats struct {
		Accounts []map[string]any `json:"accounts"`
		Pool     map[string]any   `json:"pool"`
	}
	r = h.do("GET", "/api/stats?since=1h", "x-api-key", admin)
	h.expect(r, 200, "")
	json.Unmarshal([]byte(r.body), &stats)
	if stats.Pool["requests"] != float64(5) || stats.Pool["errors"] != float64(1) || stats.Pool["input_tokens"] != float64(50) || len(stats.Accounts) != 2 {
		t.Fatalf("stats: %s", r.body)
	}
	h.expect(h.do("GET", "/api/stats?since=bogus", "x-api-key", admin), 400, "invalid_request_error")

	var list struct {
		Requests []map[string]any `json:"requests"`
	}
	r = h.do("GET", "/api/requests?limit=2", "x-api-key", admin)
	h.expect(r, 200, "")
	json.Unmarshal([]byte(r.body), &list)
	if len(list.Requests) != 2 || list.Requests[0]["id"] != "reqd" || list.Requests[1]["id"] != "reqe" || list.Requests[1]["status"] != float64(429) {
		t.Fatalf("requests (newest last): %s", r.body)
	}
	h.expect(h.do("GET", "/api/requests?limit=x", "x-api-key", admin), 400, "invalid_request_error")

	h.expect(h.do("POST", "/api/accounts/work/pause", "x-api-key", admin), 200, "")
	if a, _ := store.GetAccount(ctx, h.vdb, "work"); !a.Paused {
		t.Fatal("not paused")
	}
	h.expect(h.do("GET", "/api/accounts/work/pause", "x-api-key", admin), 405, "")
	h.expect(h.do("POST", "/api/accounts/work/resume", "x-api-key", admin), 200, "")
	if a, _ := store.GetAccount(ctx, h.vdb, "work"); a.Paused {
		t.Fatal("not resumed")
	}
	rows := h.auditRows()
	if countPrefix(rows, `key:ops account.paused: account "work" paused`) != 1 || countPrefix(rows, `key:ops account.resumed`) != 1 {
		t.Fatalf("audit: %q", rows)
	}
}

func TestNoSecretInGuardLogs(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Limits.RequestsPerMinute = 100 })
	key := h.key("k", access.RoleAPI)
	viewer := h.key("v", access.RoleViewer)
	wrong := "cf_thisisnotakeythisisnotakeythisisnotakeythi"
	h.do("POST", "/v1/messages", "x-api-key", key)
	h.do("POST", "/v1/messages", "Authorization", "Bearer "+key)
	h.do("POST", "/v1/messages", "x-api-key", wrong)
	h.do("POST", "/v1/messages", "x-api-key", viewer)
	h.do("GET", "/api/accounts", "x-api-key", key)
	h.g.Flush(context.Background())
	logs := h.logs.String()
	if !strings.Contains(logs, "client authentication failed") || !strings.Contains(logs, "permission denied") {
		t.Fatalf("expected debug lines, got:\n%s", logs)
	}
	for _, s := range []string{key, viewer, wrong, key[:20], wrong[:20]} {
		if strings.Contains(logs, s) {
			t.Fatalf("a key appears in the logs:\n%s", logs)
		}
	}
}
