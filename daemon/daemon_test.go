package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/daemon"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// stack is a real daemon (daemon.New, Start) on 127.0.0.1 in front of the
// fake upstream, with one OAuth account, real SQLite files and its logs
// (JSON, from debug up) in logs.
type stack struct {
	t     *testing.T
	api   *fakeapi.Server
	cfg   *config.Config
	d     *daemon.Daemon
	level *slog.LevelVar
	logs  *testutil.Buffer
}

// newStack starts the stack; opts, if any, adjust the daemon's options.
func newStack(t *testing.T, opts ...func(*daemon.Options)) *stack {
	t.Helper()
	api := fakeapi.New()
	t.Cleanup(api.Close)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Host, cfg.Port = "127.0.0.1", 0
	cfg.UpstreamURL = api.URL
	cfg.OAuthTokenURL = api.TokenURL()
	cfg.Log.FlushInterval = config.Duration(10 * time.Millisecond)
	ctx := context.Background()
	vdb, err := store.OpenVault(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vdb.Close() })
	ldb, err := store.OpenLog(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ldb.Close() })
	s := &stack{t: t, api: api, cfg: &cfg, level: new(slog.LevelVar), logs: &testutil.Buffer{}}
	s.level.Set(cfg.SlogLevel())
	logger := slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: s.level}))
	v, err := vault.Open(ctx, vdb, vault.KeySource{DataDir: cfg.DataDir}, vault.Options{Create: true, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.AddAccount(ctx, vault.NewAccount{Name: "work", Kind: store.KindOAuth, Mode: "max", Tier: 1},
		vault.Secrets{RefreshToken: api.NewOAuthAccount("work")}); err != nil {
		t.Fatal(err)
	}
	prep, err := audit.Prepare(ctx, v, time.Now(), "test", true)
	if err != nil || prep.Problem != nil {
		t.Fatalf("prepare audit: %v %v", err, prep.Problem)
	}
	o := daemon.Options{Config: s.cfg, Vault: v, LogDB: ldb, AuditKey: prep.Key,
		Logger: logger, Level: s.level, PollInterval: 20 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	s.d, err = daemon.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.d.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return s
}

func (s *stack) message() int { return s.messageAs("") }

// messageAs sends a message with User-Agent ua ("" = Go's default).
func (s *stack) messageAs(ua string) int {
	s.t.Helper()
	req, _ := http.NewRequest("POST", s.d.URL()+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// restartLogs returns the keys of every "take effect on restart" line.
func (s *stack) restartLogs() [][]string {
	var out [][]string
	sc := bufio.NewScanner(strings.NewReader(s.logs.String()))
	for sc.Scan() {
		var line struct {
			Msg  string   `json:"msg"`
			Keys []string `json:"keys"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && strings.Contains(line.Msg, "take effect on restart") {
			out = append(out, line.Keys)
		}
	}
	return out
}

// A reload applies every live setting at once and logs, by key, exactly
// the restart settings that changed (from the settings table).
func TestReloadAppliesLiveAndNamesRestartKeys(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	s.api.SetExpiresIn(50 * time.Minute)
	if st := s.message(); st != 200 {
		t.Fatalf("first request: %d", st)
	}
	if n := s.api.RefreshCount("work"); n != 1 {
		t.Fatalf("refreshes after the first request: %d", n)
	}
	if st := s.message(); st != 200 || s.api.RefreshCount("work") != 1 {
		t.Fatalf("a token valid for 50 minutes was refreshed with the default margin (%d, %d refreshes)", st, s.api.RefreshCount("work"))
	}

	// A reload that changes nothing logs no restart key.
	same := *s.cfg
	if err := s.d.Reload(ctx, &same); err != nil {
		t.Fatal(err)
	}
	if got := s.restartLogs(); len(got) != 0 {
		t.Fatalf("a reload without change logged restart keys: %v", got)
	}

	next := *s.cfg
	// Live.
	next.LogLevel = "debug"
	next.Tokens.RefreshMargin = config.Duration(time.Hour)
	next.RateLimit.CooldownInitial = config.Duration(time.Hour)
	next.RateLimit.CooldownMax = config.Duration(2 * time.Hour)
	next.Limits.RequestsPerMinute = 3
	next.Server.ShutdownGrace = config.Duration(2 * time.Second)
	// Restart, among them those that were neither applied nor reported.
	next.Port = 1
	next.ClientID = "another-client"
	next.LogFormat = "json"
	next.Upstream.DialTimeout = config.Duration(7 * time.Second)
	next.Log.QueueSize = s.cfg.Log.QueueSize + 1
	next.Log.BatchSize = s.cfg.Log.BatchSize + 1
	next.Log.FlushInterval = config.Duration(time.Second)
	next.RetryAttempts = s.cfg.RetryAttempts + 1
	if err := s.d.Reload(ctx, &next); err != nil {
		t.Fatal(err)
	}
	want := []string{"port", "retry_attempts", "client_id", "log_format", "upstream.dial_timeout", "log.queue_size", "log.flush_interval", "log.batch_size"}
	got := s.restartLogs()
	if len(got) != 1 || !slices.Equal(got[0], want) {
		t.Fatalf("restart keys logged: %v, want once %v\n%s", got, want, s.logs.String())
	}

	// log_level: debug lines now.
	if s.level.Level() != slog.LevelDebug {
		t.Fatalf("log level after reload: %v", s.level.Level())
	}
	// tokens.refresh_margin: a token valid for 50 minutes is inside an
	// hour's margin, so the next request refreshes it.
	if st := s.message(); st != 200 {
		t.Fatalf("request after reload: %d", st)
	}
	if n := s.api.RefreshCount("work"); n != 2 {
		t.Fatalf("refreshes after raising tokens.refresh_margin: %d, want 2", n)
	}
	// limits.requests_per_minute: the third request of the minute passes,
	// the fourth is refused by the guard.
	s.message()
	s.message()
	if st := s.message(); st != 429 {
		t.Fatalf("limits.requests_per_minute = 3: fourth request %d", st)
	}
	// ratelimit.cooldown_initial: a 429 naming no reset rests the account
	// for the new hour, not the default. (A 529 never rests an account.)
	s.cfg.Limits.RequestsPerMinute = 0
	next.Limits.RequestsPerMinute = 0
	if err := s.d.Reload(ctx, &next); err != nil {
		t.Fatal(err)
	}
	s.api.Inject(fakeapi.Fault{Account: "work", Kind: fakeapi.FaultStatus, Status: 429, Count: -1})
	s.message()
	var until time.Time
	for _, a := range s.d.Proxy().Accounts() {
		until = a.BlockedUntil
	}
	if time.Until(until) < 50*time.Minute {
		t.Fatalf("blocked until %v after a 429 with ratelimit.cooldown_initial = 1h", until)
	}
	// The restart keys are still named on each reload until a restart.
	if got := s.restartLogs(); len(got) != 2 || !slices.Equal(got[1], want) {
		t.Fatalf("second reload logged %v", got)
	}
}

// ReloadFrom keeps the running configuration when the new one does not
// load, and says so.
func TestReloadFromBadConfigKeepsRunning(t *testing.T) {
	s := newStack(t)
	s.d.ReloadFrom(context.Background(), func() (*config.Config, error) {
		return nil, io.ErrUnexpectedEOF
	})
	if !strings.Contains(s.logs.String(), "reload failed; keeping the running configuration") {
		t.Fatalf("no reload failure logged:\n%s", s.logs.String())
	}
	if st := s.message(); st != 200 {
		t.Fatalf("after a failed reload: %d", st)
	}
}
