package metrics_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/claudeflare/claudeflare/metrics"
	"github.com/claudeflare/claudeflare/store"
)

// scrape fetches /metrics over HTTP and parses it with the Prometheus text
// parser.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content-type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return fams
}

// value returns the value of the series of family name whose labels
// include want ("k=v" pairs), failing when there is not exactly one.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	v, ok := lookup(fams, name, want...)
	if !ok {
		t.Fatalf("no series %s%v", name, want)
	}
	return v
}

func lookup(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var found []float64
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			found = append(found, m.Counter.GetValue())
		case m.Gauge != nil:
			found = append(found, m.Gauge.GetValue())
		case m.Histogram != nil:
			found = append(found, float64(m.Histogram.GetSampleCount()))
		case m.Untyped != nil:
			found = append(found, m.Untyped.GetValue())
		}
	}
	if len(found) != 1 {
		return 0, false
	}
	return found[0], true
}

func TestRequestsTokensLatency(t *testing.T) {
	m := metrics.New(metrics.Options{Build: metrics.BuildInfo{Version: "1.2.3", Commit: "abc", Date: "2026-01-02"}, NoProcess: true})
	for i := 0; i < 3; i++ {
		m.ObserveRequest(metrics.Request{Account: "work", Status: 200, Model: "claude-sonnet-4-5",
			Duration: 2 * time.Second, TTFB: 300 * time.Millisecond,
			InputTokens: 10, OutputTokens: 20, CacheReadTokens: 5, CacheCreationTokens: 1})
	}
	m.ObserveRequest(metrics.Request{Account: "home", Status: 429, Model: "claude-opus-4-1", Duration: 100 * time.Millisecond, TTFB: 90 * time.Millisecond})
	m.ObserveRequest(metrics.Request{Status: 503, Duration: time.Millisecond})
	m.ObserveRequest(metrics.Request{Account: "home", Status: 499, Model: "claude-opus-4-1", Duration: time.Second, TTFB: -1}) // left before the first byte
	m.Failover("home", "rate_limited")
	m.Failover("home", "rate_limited")
	m.Failover("work", "overloaded")
	m.Refresh("work", true)
	m.Refresh("work", false)

	f := scrape(t, m.Handler())
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"claudeflare_requests_total", []string{"account=work", "status=200", "model=claude-sonnet-4-5"}, 3},
		{"claudeflare_requests_total", []string{"account=home", "status=429", "model=claude-opus-4-1"}, 1},
		{"claudeflare_requests_total", []string{"account=none", "status=503", "model=none"}, 1},
		{"claudeflare_tokens_total", []string{"account=work", "model=claude-sonnet-4-5", "kind=input"}, 30},
		{"claudeflare_tokens_total", []string{"account=work", "model=claude-sonnet-4-5", "kind=output"}, 60},
		{"claudeflare_tokens_total", []string{"account=work", "model=claude-sonnet-4-5", "kind=cache_read"}, 15},
		{"claudeflare_tokens_total", []string{"account=work", "model=claude-sonnet-4-5", "kind=cache_creation"}, 3},
		{"claudeflare_tokens_total", []string{"account=home", "kind=input"}, 0},
		{"claudeflare_request_duration_seconds", []string{"account=work"}, 3},
		{"claudeflare_request_duration_seconds", []string{"account=none"}, 1},
		{"claudeflare_time_to_first_byte_seconds", []string{"account=work"}, 3},
		{"claudeflare_time_to_first_byte_seconds", []string{"account=home"}, 1}, // not the 499
		{"claudeflare_time_to_first_byte_seconds", []string{"account=none"}, 1},
		{"claudeflare_request_duration_seconds", []string{"account=home"}, 2},
		{"claudeflare_requests_total", []string{"account=home", "status=499"}, 1},
		{"claudeflare_failovers_total", []string{"account=home", "reason=rate_limited"}, 2},
		{"claudeflare_failovers_total", []string{"account=work", "reason=overloaded"}, 1},
		{"claudeflare_token_refreshes_total", []string{"account=work"}, 2},
		{"claudeflare_token_refresh_failures_total", []string{"account=work"}, 1},
		{"claudeflare_build_info", []string{"version=1.2.3", "commit=abc", "date=2026-01-02"}, 1},
	}
	for _, c := range checks {
		if got := value(t, f, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Histogram sums are in seconds.
	for _, mm := range f["claudeflare_request_duration_seconds"].GetMetric() {
		if mm.GetLabel()[0].GetValue() == "work" && mm.Histogram.GetSampleSum() != 6 {
			t.Errorf("duration sum %v, want 6", mm.Histogram.GetSampleSum())
		}
	}
	if f["claudeflare_requests_total"].GetType() != dto.MetricType_COUNTER ||
		f["claudeflare_time_to_first_byte_seconds"].GetType() != dto.MetricType_HISTOGRAM {
		t.Error("wrong metric types")
	}
}

func TestAccountStateCollector(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := metrics.New(metrics.Options{Now: func() time.Time { return now }, NoProcess: true})
	// Before SetSources the collector reports nothing and the scrape works.
	f := scrape(t, m.Handler())
	if _, ok := f["claudeflare_account_usable"]; ok {
		t.Fatal("account metrics without sources")
	}
	var dropped int64 = 7
	m.SetSources(metrics.Sources{
		Accounts: func() []metrics.AccountState {
			return []metrics.AccountState{
				{Name: "work", Usable: true, RateLimitStatus: "allowed_warning", Util5h: 0.85, Util7d: 0.4,
					Reset: now.Add(90 * time.Minute), Reset5h: now.Add(90 * time.Minute), Reset7d: now.Add(-time.Hour), InFlight: 2,
					State: "ok"},
				{Name: "home", RateLimitStatus: "rejected", Util5h: 1, Util7d: -1, BlockedUntil: now.Add(30 * time.Second), State: "limited"},
				{Name: "old", Paused: true, NeedsLogin: true, Util5h: -1, Util7d: -1, State: "needs_login"},
			}
		},
		QueueDepth:      func() int { return 3 },
		QueueCapacity:   func() int { return 8192 },
		DroppedPayloads: func() int64 { return dropped },
		DroppedRecords:  func() int64 { return 1 },
		FailedRecords:   func() int64 { return 2 },
	})
	f = scrape(t, m.Handler())
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"claudeflare_accounts", nil, 3},
		{"claudeflare_account_usable", []string{"account=work"}, 1},
		{"claudeflare_account_usable", []string{"account=home"}, 0},
		{"claudeflare_account_paused", []string{"account=old"}, 1},
		{"claudeflare_account_needs_login", []string{"account=old"}, 1},
		{"claudeflare_account_needs_login", []string{"account=work"}, 0},
		{"claudeflare_account_rate_limit_status", []string{"account=work", "status=allowed_warning"}, 1},
		{"claudeflare_account_rate_limit_status", []string{"account=work", "status=allowed"}, 0},
		{"claudeflare_account_rate_limit_status", []string{"account=home", "status=rejected"}, 1},
		{"claudeflare_account_rate_limit_status", []string{"account=old", "status=unknown"}, 1},
		{"claudeflare_account_utilization_ratio", []string{"account=work", "window=5h"}, 0.85},
		{"claudeflare_account_utilization_ratio", []string{"account=work", "window=7d"}, 0.4},
		{"claudeflare_account_utilization_ratio", []string{"account=home", "window=5h"}, 1},
		{"claudeflare_account_rate_limit_reset_seconds", []string{"account=work", "window=unified"}, 5400},
		{"claudeflare_account_rate_limit_reset_seconds", []string{"account=work", "window=7d"}, 0},
		{"claudeflare_account_resting", []string{"account=home"}, 1},
		{"claudeflare_account_resting", []string{"account=work"}, 0},
		{"claudeflare_account_rest_remaining_seconds", []string{"account=home"}, 30},
		{"claudeflare_account_in_flight_requests", []string{"account=work"}, 2},
		{"claudeflare_account_state", []string{"account=work", "state=ok"}, 1},
		{"claudeflare_account_state", []string{"account=work", "state=limited"}, 0},
		{"claudeflare_account_state", []string{"account=home", "state=limited"}, 1},
		{"claudeflare_account_state", []string{"account=home", "state=ok"}, 0},
		{"claudeflare_account_state", []string{"account=old", "state=needs_login"}, 1},
		{"claudeflare_account_state", []string{"account=old", "state=paused"}, 0},
		{"claudeflare_account_state", []string{"account=old", "state=quarantined"}, 0},
		{"claudeflare_recorder_queue_depth", nil, 3},
		{"claudeflare_recorder_queue_capacity", nil, 8192},
		{"claudeflare_recorder_dropped_payloads_total", nil, 7},
		{"claudeflare_recorder_dropped_records_total", nil, 1},
		{"claudeflare_recorder_failed_records_total", nil, 2},
	}
	for _, c := range checks {
		if got := value(t, f, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// An unknown utilisation is left out rather than reported as 0.
	if _, ok := lookup(f, "claudeflare_account_utilization_ratio", "account=home", "window=7d"); ok {
		t.Error("unknown utilisation reported")
	}
	if f["claudeflare_recorder_dropped_payloads_total"].GetType() != dto.MetricType_COUNTER {
		t.Error("dropped payloads is not a counter")
	}
}

func TestModelCardinalityIsBounded(t *testing.T) {
	m := metrics.New(metrics.Options{NoProcess: true})
	// Names that are no model id take no label of their own, nor a slot.
	for i := 0; i < 1000; i++ {
		m.ObserveRequest(metrics.Request{Account: "a", Status: 200, Model: fmt.Sprintf("model-%d", i)})
	}
	for i := 0; i < metrics.MaxModels+50; i++ {
		m.ObserveRequest(metrics.Request{Account: "a", Status: 200, Model: fmt.Sprintf("claude-test-%d", i)})
	}
	m.ObserveRequest(metrics.Request{Account: "a", Status: 200, Model: "claude-test-0"}) // known: keeps its label
	m.ObserveRequest(metrics.Request{Account: "a", Status: 200, Model: strings.Repeat("x", 5000)})
	f := scrape(t, m.Handler())
	models := map[string]float64{}
	for _, mm := range f["claudeflare_requests_total"].GetMetric() {
		for _, l := range mm.GetLabel() {
			if l.GetName() == "model" {
				models[l.GetValue()] += mm.Counter.GetValue()
			}
		}
	}
	if len(models) != metrics.MaxModels+1 {
		var names []string
		for k := range models {
			names = append(names, k)
		}
		sort.Strings(names)
		t.Fatalf("%d model labels, want %d: %v", len(models), metrics.MaxModels+1, names)
	}
	if models["other"] != 1000+50+1 || models["claude-test-0"] != 2 || models[fmt.Sprintf("claude-test-%d", metrics.MaxModels-1)] != 1 {
		t.Errorf("other=%v claude-test-0=%v", models["other"], models["claude-test-0"])
	}
}

// TestModelLabelRule: only what looks like a Claude model id becomes a
// label value; anything else, a credential above all, is "other".
func TestModelLabelRule(t *testing.T) {
	for _, model := range []string{"claude-sonnet-4-5", "claude-3-5-haiku-20241022", "claude-opus-4-1-20250805", "claude-2.1",
		"claude-instant-1.2", "claude-" + strings.Repeat("a", 64)} {
		if !metrics.ModelLabel(model) {
			t.Errorf("%q refused", model)
		}
	}
	for _, model := range []string{"", "claude-", "claude", "gpt-4o", "Claude-sonnet-4-5", "claude-Sonnet", "claude-sonnet 4",
		"claude-sonnet_4", "claude-sonnet/4", "claude-sonnet-4-5\n", "claude-sonnet-4-5\"", "claude-sönnet",
		"claude-" + strings.Repeat("a", 65), "sk-ant-api03-" + strings.Repeat("A", 40), "claude-sk-ant-oat01-abcdef0123456789",
		"x-claude-sonnet-4-5"} {
		if metrics.ModelLabel(model) {
			t.Errorf("%q accepted", model)
		}
	}
	m := metrics.New(metrics.Options{NoProcess: true})
	m.ObserveRequest(metrics.Request{Account: "a", Status: 200, Model: "claude-sk-ant-oat01-abcdef0123456789"})
	m.ObserveRequest(metrics.Request{Account: "a", Status: 200, Model: "Claude Sonnet"})
	m.ObserveRequest(metrics.Request{Account: "a", Status: 200, Model: "claude-sonnet-4-5"})
	f := scrape(t, m.Handler())
	if v := value(t, f, "claudeflare_requests_total", "model=other"); v != 2 {
		t.Errorf("other = %v, want 2", v)
	}
	if v := value(t, f, "claudeflare_tokens_total", "model=other", "kind=input"); v != 0 {
		t.Errorf("tokens other = %v", v)
	}
	if v := value(t, f, "claudeflare_requests_total", "model=claude-sonnet-4-5"); v != 1 {
		t.Errorf("claude-sonnet-4-5 = %v, want 1", v)
	}
}

func TestRequestFromLogRow(t *testing.T) {
	m := metrics.New(metrics.Options{NoProcess: true})
	var obs interface {
		Request(store.Request)
		Failover(account, reason string)
		Refresh(account string, ok bool)
	} = m // what proxy.Observer asks for
	obs.Request(store.Request{Account: "work", Status: 200, Model: "claude-haiku-4-5", DurationMS: 1500, TTFBMS: 200,
		InputTokens: 3, OutputTokens: 4, CacheReadInputTokens: 5, CacheCreationInputTokens: 6})
	obs.Request(store.Request{Account: "work", Status: 200, Model: "claude-haiku-4-5"}) // sub-millisecond: still a sample
	obs.Request(store.Request{Account: "work", Status: 499, Model: "claude-haiku-4-5"}) // left before the first byte
	f := scrape(t, m.Handler())
	if v := value(t, f, "claudeflare_requests_total", "account=work", "status=200", "model=claude-haiku-4-5"); v != 2 {
		t.Errorf("requests %v", v)
	}
	if v := value(t, f, "claudeflare_time_to_first_byte_seconds", "account=work"); v != 2 {
		t.Errorf("ttfb samples %v, want 2", v)
	}
	if v := value(t, f, "claudeflare_request_duration_seconds", "account=work"); v != 3 {
		t.Errorf("duration samples %v, want 3", v)
	}
	if v := value(t, f, "claudeflare_tokens_total", "account=work", "kind=cache_creation"); v != 6 {
		t.Errorf("cache creation tokens %v", v)
	}
	for _, mm := range f["claudeflare_time_to_first_byte_seconds"].GetMetric() {
		if mm.Histogram.GetSampleSum() != 0.2 {
			t.Errorf("ttfb sum %v, want 0.2", mm.Histogram.GetSampleSum())
		}
	}
}

func TestNilMetricsIsANoop(t *testing.T) {
	var m *metrics.Metrics
	m.ObserveRequest(metrics.Request{Account: "a", Status: 200})
	m.Failover("a", "connection")
	m.Refresh("a", false)
	m.SetSources(metrics.Sources{})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("nil handler: %d", rec.Code)
	}
}

func TestConcurrentUseAndProcessCollectors(t *testing.T) {
	m := metrics.New(metrics.Options{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				m.ObserveRequest(metrics.Request{Account: fmt.Sprintf("acct-%d", i%3), Status: 200, Model: "m", Duration: time.Second, InputTokens: 1})
				m.Failover("acct-0", "server_error")
				m.Refresh("acct-1", i%2 == 0)
			}
		}()
	}
	go m.SetSources(metrics.Sources{QueueDepth: func() int { return 0 }})
	wg.Wait()
	f := scrape(t, m.Handler())
	var total float64
	for _, mm := range f["claudeflare_requests_total"].GetMetric() {
		total += mm.Counter.GetValue()
	}
	if total != 4000 {
		t.Errorf("requests total %v, want 4000", total)
	}
	if value(t, f, "claudeflare_failovers_total", "account=acct-0") != 4000 {
		t.Error("failovers lost")
	}
	if _, ok := f["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	m := metrics.New(metrics.Options{NoProcess: true})
	r := metrics.Request{Account: "work", Status: 200, Model: "claude-sonnet-4-5", Duration: time.Second, TTFB: time.Millisecond, InputTokens: 5, OutputTokens: 7}
	m.ObserveRequest(r)
	m.Failover("work", "rate_limited")
	m.Refresh("work", true)
	if n := testing.AllocsPerRun(1000, func() {
		m.ObserveRequest(r)
		m.Failover("work", "rate_limited")
		m.Refresh("work", true)
	}); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}

func BenchmarkObserveRequest(b *testing.B) {
	m := metrics.New(metrics.Options{NoProcess: true})
	r := metrics.Request{Account: "work", Status: 200, Model: "claude-sonnet-4-5", Duration: time.Second, TTFB: time.Millisecond, InputTokens: 5, OutputTokens: 7}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveRequest(r)
		}
	})
}
