package commands_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

// scrapeMetrics fetches GET /metrics and parses it with the Prometheus
// text parser; ok is false when the daemon serves no /metrics.
func scrapeMetrics(t *testing.T, base string) (map[string]*dto.MetricFamily, bool) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, false
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams, true
}

// sum adds the values of name's series whose labels include every k=v.
func sum(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	var total float64
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			match = match && have[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

// TestMetricsAfterTraffic sends requests through a real daemon and checks
// that /metrics counts them: requests by account, status and model, tokens
// by kind, latency histograms, account state and build info.
func TestMetricsAfterTraffic(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	c.fake.SetUsage(fakeapi.Usage{InputTokens: 11, OutputTokens: 7, CacheReadInputTokens: 5, CacheCreationInputTokens: 3})
	c.Env = append(c.Env, "RETRY_DELAY_MS=10")
	d := c.startDaemon()
	if _, ok := scrapeMetrics(t, d.url); !ok {
		t.Fatal("the daemon does not serve /metrics")
	}
	const plain, streamed = 5, 3
	for i := 0; i < plain+streamed; i++ {
		resp, body := postMessages(t, d.url, i >= plain)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	// The observer runs when the response ends; give the last one a moment.
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(5 * time.Second); ; {
		fams, _ = scrapeMetrics(t, d.url)
		if sum(fams, "claudeflare_requests_total") >= plain+streamed || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	n := float64(plain + streamed)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"claudeflare_requests_total", []string{"account=work", "status=200", "model=claude-sonnet-4-5"}, n},
		{"claudeflare_requests_total", nil, n},
		{"claudeflare_tokens_total", []string{"account=work", "kind=input"}, 11 * n},
		{"claudeflare_tokens_total", []string{"account=work", "kind=output"}, 7 * n},
		{"claudeflare_tokens_total", []string{"account=work", "kind=cache_read"}, 5 * n},
		{"claudeflare_tokens_total", []string{"account=work", "kind=cache_creation"}, 3 * n},
		{"claudeflare_request_duration_seconds", []string{"account=work"}, n},
		{"claudeflare_time_to_first_byte_seconds", []string{"account=work"}, n},
		{"claudeflare_failovers_total", nil, 0},
		{"claudeflare_accounts", nil, 1},
		{"claudeflare_account_usable", []string{"account=work"}, 1},
		{"claudeflare_account_resting", []string{"account=work"}, 0},
		{"claudeflare_build_info", nil, 1},
	} {
		if got := sum(fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if _, ok := fams["claudeflare_recorder_queue_depth"]; !ok {
		t.Error("no recorder queue depth")
	}

	// A 529 on "work" moves the next request to a second account: one
	// failover, and the request counted once, for the account that served it.
	c.MustRun(c.fake.NewAPIKey("spare")+"\n", "accounts", "add", "spare", "--api-key-stdin", "--priority", "5")
	for deadline := time.Now().Add(10 * time.Second); ; {
		fams, _ = scrapeMetrics(t, d.url)
		if sum(fams, "claudeflare_accounts") == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.fake.Inject(fakeapi.Fault{Account: "work", Kind: fakeapi.FaultStatus, Status: 529})
	if resp, body := postMessages(t, d.url, false); resp.StatusCode != 200 {
		t.Fatalf("failover: %d %s", resp.StatusCode, body)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		fams, _ = scrapeMetrics(t, d.url)
		if sum(fams, "claudeflare_requests_total") >= n+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := sum(fams, "claudeflare_failovers_total", "account=work", "reason=overloaded"); got != 1 {
		t.Errorf("failovers{work,overloaded} = %v, want 1", got)
	}
	if got := sum(fams, "claudeflare_requests_total", "account=spare", "status=200"); got != 1 {
		t.Errorf("requests{spare} = %v, want 1", got)
	}
	if got := sum(fams, "claudeflare_requests_total"); got != n+1 {
		t.Errorf("requests total = %v, want %v", got, n+1)
	}
}
