package retention_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/internal/logtest"
	"github.com/claudeflare/claudeflare/proxy"
	"github.com/claudeflare/claudeflare/retention"
	"github.com/claudeflare/claudeflare/store"
	"github.com/claudeflare/claudeflare/vault"
)

// BenchmarkDaemonLatencyDuringCleanup serves steady traffic through the
// real proxy (against the fake API, payloads captured and logged) on a
// log of n old requests, and compares the clients' request latency while
// a cleanup on another connection (cron) deletes all of them with the
// latency before it. Target: p99 within 2x.
func BenchmarkDaemonLatencyDuringCleanup(b *testing.B) {
	n := logtest.BenchRows(100_000)
	tmpl := template(b, n)
	b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
		var idle99, busy99, idle50, busy50 time.Duration
		iters := 0
		for b.Loop() {
			iters++
			idle, busy, sent, logged := daemonRun(b, tmpl, n)
			idle99, busy99 = idle99+pct(idle, 0.99), busy99+pct(busy, 0.99)
			idle50, busy50 = idle50+pct(idle, 0.5), busy50+pct(busy, 0.5)
			b.Logf("idle: %d requests p50 %s p99 %s; during cleanup: %d requests p50 %s p99 %s max %s; %d sent, %d logged",
				len(idle), pct(idle, 0.5), pct(idle, 0.99), len(busy), pct(busy, 0.5), pct(busy, 0.99), pct(busy, 1), sent, logged)
		}
		k := float64(iters)
		b.ReportMetric(float64(idle50.Microseconds())/k/1000, "idle-p50-ms")
		b.ReportMetric(float64(idle99.Microseconds())/k/1000, "idle-p99-ms")
		b.ReportMetric(float64(busy50.Microseconds())/k/1000, "cleanup-p50-ms")
		b.ReportMetric(float64(busy99.Microseconds())/k/1000, "cleanup-p99-ms")
		b.ReportMetric(float64(busy99)/float64(idle99), "p99-ratio")
	})
}

func pct(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// daemonRun returns the request latencies before and during the cleanup,
// the requests sent, and the rows logged of them.
func daemonRun(b *testing.B, tmpl string, n int) (idle, busy []time.Duration, sent, logged int) {
	b.Helper()
	dir := b.TempDir()
	if err := logtest.CopyDB(tmpl, filepath.Join(dir, store.LogFile)); err != nil {
		b.Fatal(err)
	}
	api := fakeapi.New()
	defer api.Close()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.UpstreamURL = api.URL
	cfg.OAuthTokenURL = api.TokenURL()
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	vdb, err := store.OpenVault(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer vdb.Close()
	ldb, err := store.OpenLog(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer ldb.Close()
	v, err := vault.Open(context.Background(), vdb, vault.KeySource{DataDir: dir}, vault.Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := v.AddAccount(context.Background(), vault.NewAccount{Name: "a", Kind: store.KindAPIKey}, vault.Secrets{APIKey: api.NewAPIKey("a")}); err != nil {
		b.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{Config: &cfg, Vault: v, VaultDB: vdb, LogDB: ldb})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, stopServer := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String() + "/v1/messages?beta=true"

	// Four clients, each a request every 10ms (about 400 requests/s with
	// the recorder writing them and their payloads).
	var mu sync.Mutex
	var lat *[]time.Duration = &idle
	load, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	failed := 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-load.Done():
					return
				case <-t.C:
				}
				body := `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"` + strings.Repeat("hello ", 100) + `"}]}`
				start := time.Now()
				resp, err := client.Post(url, "application/json", strings.NewReader(body))
				ok := err == nil
				if ok {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode == 200
				}
				d := time.Since(start)
				mu.Lock()
				*lat = append(*lat, d)
				sent++
				if !ok {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	// The baseline: enough idle samples (about 5s of this load), counted
	// rather than timed, so that a slow machine still gets its share.
	const idleSamples = 2000
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(idle)
		if n >= idleSamples {
			lat = &busy
		}
		mu.Unlock()
		if n >= idleSamples {
			break
		}
		if time.Now().After(deadline) {
			stopLoad()
			b.Fatalf("only %d requests served in 2 minutes", n)
		}
	}

	cron, err := store.OpenLog(dir)
	if err != nil {
		b.Fatal(err)
	}
	res, err := retention.Cleanup(context.Background(), cron, retention.Options{Type: retention.All, Before: t0.Add(time.Duration(n) * time.Second)})
	cron.Close()
	if err != nil {
		b.Fatal(err)
	}
	stopLoad()
	wg.Wait()
	stopServer()
	if err := <-served; err != nil {
		b.Fatal(err)
	}
	if failed > 0 || res.Requests != int64(n) {
		b.Fatalf("%d requests failed; cleanup deleted %d of %d", failed, res.Requests, n)
	}
	if err := ldb.R.Get(&logged, `SELECT count(*) FROM requests`); err != nil {
		b.Fatal(err)
	}
	return idle, busy, sent, logged
}
