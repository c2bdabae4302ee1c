package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/metrics"
	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// metricsSecret is a credential a client put in the model field.
const metricsSecret = "sk-ant-api03-METRICSLEAK0123456789abcdefghijklmnopqrstuvwx"

// TestJunkModelsThroughTheProxy sends requests with a thousand distinct
// junk models, models holding a credential and more model-like ids than
// MaxModels through the real proxy (the fake upstream echoes the model,
// as a compatible upstream may) and checks /metrics: a bounded number of
// series, no credential, and the real model still counted under its name.
func TestJunkModelsThroughTheProxy(t *testing.T) {
	api := fakeapi.New()
	t.Cleanup(api.Close)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir, cfg.UpstreamURL, cfg.OAuthTokenURL = dir, api.URL, api.TokenURL()
	cfg.Log.FlushInterval = config.Duration(10 * time.Millisecond)
	if err := vault.EnsureDataDir(dir); err != nil {
		t.Fatal(err)
	}
	vdb, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vdb.Close() })
	ldb, err := store.OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ldb.Close() })
	ctx := context.Background()
	v, err := vault.Open(ctx, vdb, vault.KeySource{DataDir: dir}, vault.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.AddAccount(ctx, vault.NewAccount{Name: "work", Kind: store.KindAPIKey}, vault.Secrets{APIKey: api.NewAPIKey("work")}); err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.Options{NoProcess: true})
	srv, err := proxy.New(proxy.Options{
		Config: &cfg, Vault: v, VaultDB: vdb, LogDB: ldb, Observer: m,
		Middleware: func(next http.Handler) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", m.Handler())
			mux.Handle("/", next)
			return mux
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(client.CloseIdleConnections)
	post := func(model string, stream bool) {
		t.Helper()
		body := fmt.Sprintf(`{"model":%q,"max_tokens":8,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, model, stream)
		req, _ := http.NewRequest("POST", base+"/v1/messages", strings.NewReader(body))
		req.Header.Set("content-type", "application/json")
		req.Header.Set("anthropic-version", "2023-06-01")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("model %q: %d %s", model, resp.StatusCode, b)
		}
	}
	scrapeText := func() string {
		t.Helper()
		resp, err := client.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
		}
		return string(b)
	}

	var sent int
	for i := range 1000 {
		post(fmt.Sprintf("junk model %d <%x>", i, i*7919), i%4 == 0)
		sent++
	}
	for _, model := range []string{metricsSecret, "claude-" + strings.ToLower(metricsSecret), "claude-x " + metricsSecret} {
		post(model, false)
		post(model, true)
		sent += 2
	}
	for i := range metrics.MaxModels + 20 {
		post(fmt.Sprintf("claude-fake-%d", i), false)
		sent++
	}
	post("claude-sonnet-4-5", true) // past the cap: counted as other
	sent++

	// The observer runs as each response ends: wait until all are counted.
	var fams = scrape(t, m.Handler())
	for deadline := time.Now().Add(30 * time.Second); ; {
		total := 0.0
		for _, mm := range fams["claudeflare_requests_total"].GetMetric() {
			total += mm.GetCounter().GetValue()
		}
		if total == float64(sent) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics counts %v requests, %d sent", total, sent)
		}
		time.Sleep(20 * time.Millisecond) // paces the poll
		fams = scrape(t, m.Handler())
	}
	if text := scrapeText(); strings.Contains(text, "sk-ant") || strings.Contains(strings.ToLower(text), "metricsleak") || strings.Contains(text, "junk") {
		t.Fatal("/metrics shows text from a client's model field")
	}
	if n := len(fams["claudeflare_requests_total"].GetMetric()); n > metrics.MaxModels+1 {
		t.Errorf("%d request series for one account and status after %d distinct models", n, sent)
	}
	if n := len(fams["claudeflare_tokens_total"].GetMetric()); n > 4*(metrics.MaxModels+1) {
		t.Errorf("%d token series", n)
	}
	if v := value(t, fams, "claudeflare_requests_total", "model=other"); v != float64(1000+6+20+1) {
		t.Errorf("other = %v", v)
	}
	if v := value(t, fams, "claudeflare_requests_total", "model=claude-fake-0"); v != 1 {
		t.Errorf("claude-fake-0 = %v", v)
	}
}
