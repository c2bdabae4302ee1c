package access_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/target"
	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// routeStack is the daemon's handler as commands/daemon.go builds it (the
// guard in front of a mux with /metrics and the real proxy, which
// forwards to the fake API), with two observers: what route reached the
// proxy's handler with the guard's authorization, and what path went out
// on the wire to the upstream.
type routeStack struct {
	t    testing.TB
	api  *fakeapi.Server
	cfg  *config.Config
	vdb  *store.DB
	v    *vault.Vault
	akey []byte
	g    *access.Guard
	px   *proxy.Server
	srv  *httptest.Server
	addr string
	logs *syncBuffer

	mu     sync.Mutex
	routes []string // the guard's route of each request the proxy's handler got
	wire   []string // the path+query of each request sent upstream
}

func newRouteStack(t testing.TB, mod func(*config.Config)) *routeStack {
	t.Helper()
	api := fakeapi.New()
	t.Cleanup(api.Close)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.UpstreamURL = api.URL
	cfg.OAuthTokenURL = api.TokenURL()
	cfg.Log.Payloads = config.PayloadsOff
	cfg.Log.FlushInterval = config.Duration(10 * time.Millisecond)
	if mod != nil {
		mod(&cfg)
	}
	s := &routeStack{t: t, api: api, cfg: &cfg, logs: &syncBuffer{}}
	ctx := context.Background()
	vdb, err := store.OpenVault(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	ldb, err := store.OpenLog(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vdb.Close(); ldb.Close() })
	logger := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	v, err := vault.Open(ctx, vdb, vault.KeySource{DataDir: cfg.DataDir}, vault.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	s.vdb, s.v = vdb, v
	p, err := audit.Prepare(ctx, v, time.Now(), "test", true)
	if err != nil {
		t.Fatal(err)
	}
	s.akey = p.Key
	if _, err := v.AddAccount(ctx, vault.NewAccount{Name: "work", Kind: store.KindOAuth, Mode: "max", Tier: 1}, vault.Secrets{
		RefreshToken: api.NewOAuthAccount("work"), AccessToken: api.NewAccessToken("work"), ExpiresAt: time.Now().Add(fakeapi.DefaultExpiresIn),
	}); err != nil {
		t.Fatal(err)
	}
	if s.g, err = access.New(ctx, access.Options{Config: s.cfg, VaultDB: vdb, AuditKey: s.akey, LogDB: ldb, Logger: logger, PollInterval: time.Hour}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.g.Stop(context.Background()) })
	wire := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		s.mu.Lock()
		s.wire = append(s.wire, r.URL.RequestURI())
		s.mu.Unlock()
		return http.DefaultTransport.RoundTrip(r)
	})
	s.px, err = proxy.New(proxy.Options{
		Config: s.cfg, Vault: v, VaultDB: vdb, LogDB: ldb, Logger: logger,
		HTTPClient: &http.Client{Transport: wire}, PollInterval: time.Hour,
		Middleware: func(next http.Handler) http.Handler {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics\n") })
			mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				route, ok := target.AuthorizedFrom(r.Context())
				if !ok {
					route = "(none)"
				}
				s.mu.Lock()
				s.routes = append(s.routes, route)
				s.mu.Unlock()
				next.ServeHTTP(w, r)
			}))
			return s.g.Wrap(mux)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.px.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.px.Stop(ctx)
	})
	s.srv = httptest.NewServer(s.px.Handler())
	t.Cleanup(s.srv.Close)
	s.addr = strings.TrimPrefix(s.srv.URL, "http://")
	return s
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (s *routeStack) key(name string, role access.Role) string {
	s.t.Helper()
	k, _, err := access.CreateKey(context.Background(), s.vdb, s.akey, name, role, "test", time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.g.Reload(context.Background()); err != nil {
		s.t.Fatal(err)
	}
	return k
}

// reset forgets what was observed so far.
func (s *routeStack) reset() {
	s.mu.Lock()
	s.routes, s.wire = nil, nil
	s.mu.Unlock()
	s.api.ResetRequests()
}

func (s *routeStack) observed() (routes, wire []string, upstream []fakeapi.Recorded) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.routes...), append([]string(nil), s.wire...), s.api.Requests()
}

// raw sends method and target byte for byte (curl --path-as-is) over a
// new connection, with a body when body is not empty.
func (s *routeStack) raw(method, target, body string, headers ...string) reply {
	s.t.Helper()
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, s.addr)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		s.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(rb)}
}

const routeMsg = `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`

// Every way the first review found to make the guard and the forwarder
// see different paths is refused with 400 in Anthropic's shape, with or
// without a key, and nothing reaches the upstream; canonical targets go
// through unchanged.
func TestGuardAndForwarderSeeOnePath(t *testing.T) {
	s := newRouteStack(t, nil)
	apiKey := s.key("claude-code", access.RoleAPI)
	viewer := s.key("grafana", access.RoleViewer)

	refused := []struct{ method, target, body string }{
		{"GET", "/v1/models/x%2F..%2F..%2F..%2Fhealth", ""},
		{"POST", "/v1/messages%2F..%2F..%2Fhealth", routeMsg},
		{"GET", "/v1/x%2F..%2F..", ""},
		{"CONNECT", "/v1/../health", ""},
		{"GET", "/v1/../metrics", ""},
		{"GET", "/v1/x%2F..%2F..%2Fmetrics", ""},
		{"GET", "/metrics/../v1/models", ""},
		{"POST", "/metrics%2F..%2Fv1%2Fmessages", routeMsg},
		{"POST", "//v1/messages", routeMsg},
		{"POST", "/v1/./messages", routeMsg},
		{"POST", "/v1//messages", routeMsg},
		{"POST", `/v1\messages`, routeMsg},
		{"POST", "/v1%5Cmessages", routeMsg},
		{"POST", "/v1/%2E%2E/v1/messages", routeMsg},
		{"POST", "/v1/messages/..", routeMsg},
		{"GET", "/health/../v1/models", ""},
		{"GET", "http://" + "127.0.0.1/v1/models", ""},
		{"GET", "http://evil.example/health", ""},
	}
	for _, who := range []struct {
		name string
		hdr  []string
	}{{"no key", nil}, {"api key", []string{"x-api-key", apiKey}}, {"viewer key", []string{"x-api-key", viewer}}} {
		for _, tc := range refused {
			s.reset()
			r := s.raw(tc.method, tc.target, tc.body, who.hdr...)
			if r.status != http.StatusBadRequest || r.errType() != "invalid_request_error" || r.header.Get("X-Should-Retry") != "false" {
				t.Errorf("%s: %s %s: %d %q (%s), want 400 invalid_request_error", who.name, tc.method, tc.target, r.status, r.header.Get("X-Should-Retry"), r.body)
			}
			routes, wire, up := s.observed()
			if len(routes) != 0 || len(wire) != 0 || len(up) != 0 {
				t.Errorf("%s: %s %s got past the guard: routes %v, sent upstream %v", who.name, tc.method, tc.target, routes, wire)
			}
		}
	}

	// The viewer key's permissions follow the one path: /metrics yes,
	// /v1 no, whatever the spelling.
	s.reset()
	if r := s.raw("GET", "/metrics", "", "x-api-key", viewer); r.status != 200 || r.body != "metrics\n" {
		t.Fatalf("viewer /metrics: %d %s", r.status, r.body)
	}
	if r := s.raw("GET", "/v1/models", "", "x-api-key", viewer); r.status != 403 {
		t.Fatalf("viewer /v1/models: %d %s", r.status, r.body)
	}
	if _, wire, _ := s.observed(); len(wire) != 0 {
		t.Fatalf("a viewer request went upstream: %v", wire)
	}

	// Without a key nothing but the public routes is served, and none of
	// them reaches the upstream.
	for _, tc := range []struct {
		method, target string
		want           int
	}{{"GET", "/health", 200}, {"HEAD", "/", 200}, {"GET", "/v1/models", 401}, {"POST", "/v1/messages?beta=true", 401}, {"GET", "/metrics", 401}} {
		s.reset()
		if r := s.raw(tc.method, tc.target, ""); r.status != tc.want {
			t.Errorf("no key: %s %s: %d, want %d", tc.method, tc.target, r.status, tc.want)
		}
		if _, wire, up := s.observed(); len(wire) != 0 || len(up) != 0 {
			t.Errorf("no key: %s %s reached the upstream: %v", tc.method, tc.target, wire)
		}
	}

	// Canonical targets are forwarded as sent: the query string
	// untouched, a trailing slash kept.
	for _, tc := range []struct{ method, target, body, path, query string }{
		{"POST", "/v1/messages?beta=true", routeMsg, "/v1/messages", "beta=true"},
		{"POST", "/v1/messages/?beta=true", routeMsg, "/v1/messages/", "beta=true"},
		// (GET /v1/models itself is the proxy's own list: proxy/models.go.)
		{"GET", "/v1/models/claude-x?limit=5&after_id=a%2F..%2Fb", "", "/v1/models/claude-x", "limit=5&after_id=a%2F..%2Fb"},
		{"GET", "/v1/models/claude-sonnet-4-5", "", "/v1/models/claude-sonnet-4-5", ""},
	} {
		s.reset()
		r := s.raw(tc.method, tc.target, tc.body, "x-api-key", apiKey)
		if r.status == 400 && strings.Contains(r.body, "claudeflare") {
			t.Errorf("%s %s refused: %s", tc.method, tc.target, r.body)
			continue
		}
		routes, wire, up := s.observed()
		want := tc.path
		if tc.query != "" {
			want += "?" + tc.query
		}
		if len(routes) != 1 || routes[0] != tc.path || len(wire) != 1 || wire[0] != want ||
			len(up) != 1 || up[0].Path != tc.path || up[0].RawQuery != tc.query {
			t.Errorf("%s %s: authorized %v, sent %v, upstream got %+v; want %s", tc.method, tc.target, routes, wire, up, want)
		}
	}
}

// The per-key stream cap and the no-keys Host check apply to every /v1
// path: there is no spelling of a /v1 path that the guard classes as
// something else.
func TestLimitsCoverEveryV1Path(t *testing.T) {
	s := newRouteStack(t, func(c *config.Config) { c.Limits.ConcurrentStreams = 1 })
	s.api.SetEventDelay(50 * time.Millisecond)
	// No keys: a DNS name in Host is refused for every /v1 target.
	for _, target := range []string{"/v1/messages", "/v1/models/x", "/v1/messages/"} {
		s.reset()
		req, _ := http.NewRequest("GET", s.srv.URL+target, nil)
		req.Host = "evil.example:80"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("no keys, Host evil.example, %s: %d, want 403", target, resp.StatusCode)
		}
		if _, wire, _ := s.observed(); len(wire) != 0 {
			t.Errorf("%s with a rebinding Host reached the upstream", target)
		}
	}

	key := s.key("claude-code", access.RoleAPI)
	// One stream in flight holds the key's only slot...
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.srv.URL+"/v1/messages", strings.NewReader(`{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// ...so a second request on any /v1 path is refused by the limit.
	for _, target := range []string{"/v1/models", "/v1/models/x", "/v1/messages/"} {
		r := s.raw("GET", target, "", "x-api-key", key)
		if r.status != 429 || r.header.Get("X-Claudeflare-Limit") != "client" {
			t.Errorf("%s while a stream holds the slot: %d %s", target, r.status, r.body)
		}
	}
	cancel()
}

// FuzzRequestTarget: for any request target and method, the request is
// refused, or the path the upstream receives is exactly the route the
// guard authorized (and a /v1/ route); without a key nothing at all
// reaches the upstream while keys exist.
func FuzzRequestTarget(f *testing.F) {
	for _, seed := range []string{
		"/v1/messages?beta=true", "/v1/models/x%2F..%2F..%2F..%2Fhealth", "/v1/messages%2F..%2F..%2Fhealth",
		"/v1/x%2F..%2F..", "/v1/../health", "//v1/messages", "/v1/./messages", "/v1/messages/", `/v1\messages`,
		"/v1/%2e%2e/metrics", "/metrics", "/health", "/", "/v1/a%20b", "/v1/%C3%A9", "http://x/v1/models", "*",
		"/v1/models;x=..%2F", "/v1/messages?x=/../health",
	} {
		f.Add("GET", seed)
		f.Add("POST", seed)
	}
	f.Add("CONNECT", "/v1/../health")
	f.Add("CONNECT", "127.0.0.1:443")
	f.Add("OPTIONS", "*")

	s := newRouteStack(f, nil)
	key := s.key("claude-code", access.RoleAPI)
	s.api.SetMaxRecorded(1 << 20)

	f.Fuzz(func(t *testing.T, method, target string) {
		if method == "" || strings.ContainsAny(method+target, " \t\r\n") || target == "" {
			t.Skip()
		}
		build := func(withKey bool) *http.Request {
			var b strings.Builder
			fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, target)
			if withKey {
				b.WriteString("x-api-key: " + key + "\r\n")
			}
			b.WriteString("\r\n")
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(b.String())))
			if err != nil {
				return nil // net/http refuses it before any handler
			}
			r.RemoteAddr = "127.0.0.1:40000"
			return r
		}
		for _, withKey := range []bool{false, true} {
			r := build(withKey)
			if r == nil {
				t.Skip()
			}
			s.reset()
			w := httptest.NewRecorder()
			s.px.Handler().ServeHTTP(w, r)
			routes, wire, up := s.observed()
			if !withKey && (len(wire) != 0 || len(up) != 0) {
				t.Fatalf("%s %q without a key reached the upstream: %v", method, target, wire)
			}
			if len(wire) == 0 {
				continue // refused, or served by the daemon itself
			}
			if len(routes) != 1 || len(wire) != 1 {
				t.Fatalf("%s %q: authorized %v, sent %v", method, target, routes, wire)
			}
			sent, _, _ := strings.Cut(wire[0], "?")
			if sent != routes[0] || !strings.HasPrefix(routes[0], "/v1/") {
				t.Fatalf("%s %q: authorized %q, upstream got %q", method, target, routes[0], sent)
			}
			dec, err := url.PathUnescape(routes[0])
			if err != nil || len(up) != 1 || up[0].Path != dec {
				t.Fatalf("%s %q: authorized %q, upstream decoded %+v", method, target, routes[0], up)
			}
		}
	})
}
