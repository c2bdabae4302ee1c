package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/apierr"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

const (
	msgBody    = `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
	streamBody = `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
)

// clock is a settable clock shared by the proxy and the fake API.
type clock = testutil.Clock

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testutil.Buffer

// tee records the bytes of every upstream response body as the proxy read
// them, for byte-identity checks.
type tee struct {
	rt     http.RoundTripper
	mu     sync.Mutex
	bodies []*bytes.Buffer
}

func (t *tee) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil || r.URL.Path == fakeapi.TokenPath {
		return resp, err
	}
	b := &bytes.Buffer{}
	t.mu.Lock()
	t.bodies = append(t.bodies, b)
	t.mu.Unlock()
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.TeeReader(resp.Body, b), resp.Body}
	return resp, nil
}

type harness struct {
	t      testing.TB
	api    *fakeapi.Server
	dir    string
	cfg    *config.Config
	clock  *clock
	logs   *syncBuffer
	vault  *vault.Vault
	vdb    *store.DB
	ldb    *store.DB
	srv    *Server
	url    string
	tee    *tee
	cancel context.CancelFunc
	served chan error

	sleepMu sync.Mutex
	sleeps  []time.Duration

	benchMode bool // the server's own transport, the default poll

	// beforeServe, when set, is called with each new Server before it
	// serves (OnRecord and the like must be called then).
	beforeServe func(*Server)
}

// forBench runs the server as the daemon would: its own transport (no
// tee) and the default account poll.
func forBench(h *harness) { h.benchMode = true }

type harnessOpt func(*harness)

// withConfig changes the config before the server starts.
func withConfig(f func(*config.Config)) harnessOpt {
	return func(h *harness) { f(h.cfg) }
}

func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	api := fakeapi.New()
	t.Cleanup(api.Close)
	h := &harness{t: t, api: api, dir: t.TempDir(), logs: &syncBuffer{}}
	h.clock = testutil.NewClock(time.Now().UTC().Truncate(time.Millisecond))
	api.SetNow(h.clock.Now)
	cfg := config.Default()
	cfg.DataDir = h.dir
	cfg.UpstreamURL = api.URL
	cfg.OAuthTokenURL = api.TokenURL()
	cfg.Server.ShutdownGrace = config.Duration(10 * time.Second)
	cfg.Log.FlushInterval = config.Duration(10 * time.Millisecond)
	h.cfg = &cfg
	for _, o := range opts {
		o(h)
	}
	if err := vault.EnsureDataDir(h.dir); err != nil {
		t.Fatal(err)
	}
	h.openDBs()
	h.start()
	return h
}

func (h *harness) openDBs() {
	t := h.t
	vdb, err := store.OpenVault(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	ldb, err := store.OpenLog(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(context.Background(), vdb, vault.KeySource{DataDir: h.dir}, vault.Options{Create: true, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h.vdb, h.ldb, h.vault = vdb, ldb, v
}

// start creates a Server on the harness's data dir and serves it.
func (h *harness) start() {
	t := h.t
	h.tee = &tee{rt: &http.Transport{MaxIdleConnsPerHost: 64}}
	logger := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	client, poll := &http.Client{Transport: h.tee}, 20*time.Millisecond
	if h.benchMode {
		client, poll = nil, 0
		logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	srv, err := New(Options{
		Config: h.cfg, Vault: h.vault, VaultDB: h.vdb, LogDB: h.ldb, Logger: logger,
		Now:          h.clock.Now,
		HTTPClient:   client,
		PollInterval: poll,
		Sleep: func(ctx context.Context, d time.Duration) error {
			h.sleepMu.Lock()
			h.sleeps = append(h.sleeps, d)
			h.sleepMu.Unlock()
			return ctx.Err()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.beforeServe != nil {
		h.beforeServe(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.srv, h.url, h.cancel = srv, "http://"+ln.Addr().String(), cancel
	h.served = make(chan error, 1)
	go func() { h.served <- srv.Serve(ctx, ln) }()
	t.Cleanup(h.stop)
}

// stop shuts the server down and waits for Serve to return.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	if err := <-h.served; err != nil {
		h.t.Errorf("serve: %v", err)
	}
}

// restart stops the server, closes the databases, and starts a new
// Server on the same data dir.
func (h *harness) restart() {
	h.stop()
	h.vdb.Close()
	h.ldb.Close()
	h.openDBs()
	h.start()
}

// addOAuth adds an OAuth account with a live access token (no refresh
// needed at first use) unless expired is set.
func (h *harness) addOAuth(name string, priority int, expired bool) int64 {
	h.t.Helper()
	s := vault.Secrets{RefreshToken: h.api.NewOAuthAccount(name)}
	if !expired {
		s.AccessToken = h.api.NewAccessToken(name)
		s.ExpiresAt = h.clock.Now().Add(fakeapi.DefaultExpiresIn)
	}
	id, err := h.vault.AddAccount(context.Background(), vault.NewAccount{Name: name, Kind: store.KindOAuth, Mode: "max", Priority: priority, Tier: 1}, s)
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) addAPIKey(name string, priority int) int64 {
	h.t.Helper()
	id, err := h.vault.AddAccount(context.Background(), vault.NewAccount{Name: name, Kind: store.KindAPIKey, Priority: priority},
		vault.Secrets{APIKey: h.api.NewAPIKey(name)})
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

// reload makes the server see accounts changed in the vault now.
func (h *harness) reload() {
	h.t.Helper()
	if err := h.srv.Reload(context.Background()); err != nil {
		h.t.Fatal(err)
	}
}

type reply struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (h *harness) do(ctx context.Context, method, path, body string, hdr http.Header) reply {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	for k, v := range hdr {
		req.Header[k] = v
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func (h *harness) post(body string) reply {
	h.t.Helper()
	return h.do(context.Background(), http.MethodPost, "/v1/messages?beta=true", body, nil)
}

// rows flushes the recorder and returns the request log, oldest first.
func (h *harness) rows() []store.Request {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.srv.rec.sync(ctx)
	var out []store.Request
	if err := h.ldb.R.SelectContext(ctx, &out, `SELECT `+store.RequestColumns+` FROM requests ORDER BY seq`); err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) lastRow() store.Request {
	h.t.Helper()
	rows := h.rows()
	if len(rows) == 0 {
		h.t.Fatal("no request rows")
	}
	return rows[len(rows)-1]
}

// account reads an account row from the vault database.
func (h *harness) account(name string) store.Account {
	h.t.Helper()
	a, err := store.GetAccount(context.Background(), h.vdb, name)
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// limit returns the in-memory limit state of the named account.
func (h *harness) limit(name string) LimitState {
	h.srv.pool.mu.Lock()
	defer h.srv.pool.mu.Unlock()
	for _, a := range h.srv.pool.accounts {
		if a.Name == name {
			return a.limit
		}
	}
	h.t.Fatalf("no account %s", name)
	return LimitState{}
}

// apiRequests returns the fake's recorded /v1/messages requests.
func (h *harness) apiRequests() []fakeapi.Recorded {
	var out []fakeapi.Recorded
	for _, r := range h.api.Requests() {
		if r.Path != fakeapi.TokenPath {
			out = append(out, r)
		}
	}
	return out
}

func decodeError(t testing.TB, b []byte) apierr.Body {
	t.Helper()
	var e apierr.Body
	if err := json.Unmarshal(b, &e); err != nil || e.Type != "error" || e.Error.Type == "" {
		t.Fatalf("not an Anthropic error: %s", b)
	}
	return e
}

// waitFor polls cond (for background work driven by real tickers).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// poolSize is the number of accounts the pool holds.
func poolSize(s *Server) int {
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	return len(s.pool.accounts)
}
