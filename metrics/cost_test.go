package metrics_test

import (
	"math"
	"testing"

	"github.com/claudeflare/claudeflare/metrics"
	"github.com/claudeflare/claudeflare/store"
)

// claudeflare_cost_usd_total adds each row's cost_usd under the labels of
// claudeflare_requests_total; a row without a price adds nothing.
func TestCostCounter(t *testing.T) {
	m := metrics.New(metrics.Options{NoProcess: true})
	half, quarter := 0.5, 0.25
	m.Request(store.Request{Account: "work", Status: 200, Model: "claude-haiku-4-5", CostUSD: &half})
	m.Request(store.Request{Account: "work", Status: 200, Model: "claude-haiku-4-5", CostUSD: &quarter})
	m.Request(store.Request{Account: "work", Status: 200, Model: "claude-haiku-4-5"}) // no price
	m.Request(store.Request{Account: "home", Status: 499, Model: "claude-sonnet-4-5", CostUSD: &quarter})
	f := scrape(t, m.Handler())
	if v := value(t, f, "claudeflare_cost_usd_total", "account=work", "status=200", "model=claude-haiku-4-5"); math.Abs(v-0.75) > 1e-12 {
		t.Errorf("work cost %v, want 0.75", v)
	}
	if v := value(t, f, "claudeflare_cost_usd_total", "account=home", "status=499", "model=claude-sonnet-4-5"); v != 0.25 {
		t.Errorf("home cost %v, want 0.25", v)
	}
	if v := value(t, f, "claudeflare_requests_total", "account=work", "status=200", "model=claude-haiku-4-5"); v != 3 {
		t.Errorf("requests %v", v)
	}
	m.ObserveRequest(metrics.Request{Account: "work", Status: 200, Model: "claude-haiku-4-5", CostUSD: 1})
	f = scrape(t, m.Handler())
	if v := value(t, f, "claudeflare_cost_usd_total", "account=work", "status=200", "model=claude-haiku-4-5"); math.Abs(v-1.75) > 1e-12 {
		t.Errorf("after ObserveRequest: %v, want 1.75", v)
	}
}
