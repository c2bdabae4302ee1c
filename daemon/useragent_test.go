package daemon_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/audit"
	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/daemon"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/metrics"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// The daemon's token refresh names claudeflare and its version; the
// request it forwards keeps the client's own User-Agent.
func TestRefreshUserAgentNamesClaudeflareAndClientsPassThrough(t *testing.T) {
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
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	v, err := vault.Open(ctx, vdb, vault.KeySource{DataDir: cfg.DataDir}, vault.Options{Create: true, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	// Only a refresh token: the first request refreshes.
	if _, err := v.AddAccount(ctx, vault.NewAccount{Name: "work", Kind: store.KindOAuth, Mode: "max", Tier: 1},
		vault.Secrets{RefreshToken: api.NewOAuthAccount("work")}); err != nil {
		t.Fatal(err)
	}
	prep, err := audit.Prepare(ctx, v, time.Now(), "test", true)
	if err != nil || prep.Problem != nil {
		t.Fatalf("prepare audit: %v %v", err, prep.Problem)
	}
	d, err := daemon.New(ctx, daemon.Options{Config: &cfg, Vault: v, LogDB: ldb, AuditKey: prep.Key,
		Logger: logger, PollInterval: 20 * time.Millisecond, Build: metrics.BuildInfo{Version: "v9.8.7"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})

	const clientUA = "claude-cli/2.0.14 (external, cli)"
	req, _ := http.NewRequest("POST", d.URL()+"/v1/messages",
		strings.NewReader(`{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("User-Agent", clientUA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var token, forwarded []string
	for _, r := range api.Requests() {
		switch r.Path {
		case fakeapi.TokenPath:
			token = append(token, r.Header.Get("User-Agent"))
		case "/v1/messages":
			forwarded = append(forwarded, r.Header.Get("User-Agent"))
		}
	}
	if len(token) != 1 || token[0] != "claudeflare/v9.8.7 (+https://github.com/claudeflare/claudeflare)" {
		t.Fatalf("token endpoint saw User-Agent %q", token)
	}
	if len(forwarded) != 1 || forwarded[0] != clientUA {
		t.Fatalf("upstream saw User-Agent %q, want the client's %q", forwarded, clientUA)
	}
}
