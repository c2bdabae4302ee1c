package access_test

import (
	"encoding/json"
	"math"
	"net/url"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/fakeapi"
)

type statsGroup struct {
	Scope    string   `json:"scope"`
	Key      *string  `json:"key"`
	Requests int64    `json:"requests"`
	CostUSD  *float64 `json:"cost_usd"`
	Unpriced int64    `json:"unpriced_requests"`
}

type statsAnswer struct {
	By           string           `json:"by"`
	Groups       []statsGroup     `json:"groups"`
	Total        statsGroup       `json:"total"`
	Subscription bool             `json:"subscription_cost"`
	Accounts     []map[string]any `json:"accounts"`
	Pool         map[string]any   `json:"pool"`
}

// The admin API shows cost_usd: per request in /api/requests (null for a
// model without a price) and summed by /api/stats?by=..., on a request
// served by the real daemon and rows in its log.
func TestAdminAPICost(t *testing.T) {
	d := newDaemonStack(t, nil)
	d.api.SetUsage(fakeapi.Usage{InputTokens: 1000, OutputTokens: 100})
	expectStatus(t, d.message(false), 200, "") // served by work (OAuth), before keys exist
	want := (1000*3.0 + 100*15.0) / 1e6        // claude-sonnet-4-5
	admin, viewer := d.adminKeys()
	now := d.clk.Now()
	unknown := logRow("req_mystery", now.Add(-90*time.Minute), 200, "pool")
	unknown.Model = "mystery-model"
	d.insert(unknown)

	// Every request the daemon served (adminKeys sends more until keys
	// are required) cost the same.
	served, mystery := 0, 0
	var servedCost float64
	for _, row := range d.rawRequests(admin) {
		switch {
		case row["id"] == "req_mystery":
			mystery++
			if v, ok := row["cost_usd"]; !ok || v != nil {
				t.Errorf("unpriced row: cost_usd %v (present %v), want null", v, ok)
			}
		case row["account"] == "work" && row["status"] == 200.0:
			served++
			c, ok := row["cost_usd"].(float64)
			if !ok || math.Abs(c-want) > 1e-12 {
				t.Errorf("served row: cost_usd %v, want %v", row["cost_usd"], want)
			}
			servedCost += c
		}
	}
	if served == 0 || mystery != 1 {
		t.Fatalf("/api/requests: %d served rows, %d unpriced", served, mystery)
	}

	st := d.stats(viewer, "by=model&since=3h")
	var sonnet, myst *statsGroup
	for i, g := range st.Groups {
		switch {
		case g.Key != nil && *g.Key == "claude-sonnet-4-5":
			sonnet = &st.Groups[i]
		case g.Key != nil && *g.Key == "mystery-model":
			myst = &st.Groups[i]
		}
	}
	if st.By != "model" || sonnet == nil || sonnet.CostUSD == nil || math.Abs(*sonnet.CostUSD-servedCost) > 1e-12 ||
		myst == nil || myst.CostUSD != nil || myst.Unpriced != 1 || st.Total.Scope != "total" || st.Total.Key != nil ||
		st.Total.CostUSD == nil || math.Abs(*st.Total.CostUSD-servedCost) > 1e-12 || !st.Subscription || st.Accounts != nil {
		t.Errorf("by model: %+v", st)
	}

	st = d.stats(viewer, "by=hour&since=3h")
	if len(st.Groups) != 4 || st.Groups[0].Scope != "hour" || *st.Groups[0].Key != now.Add(-3*time.Hour).UTC().Truncate(time.Hour).Format(time.RFC3339) ||
		st.Groups[3].Requests == 0 || st.Total.Requests != st.Groups[1].Requests+st.Groups[2].Requests+st.Groups[3].Requests {
		t.Errorf("by hour: %+v", st.Groups)
	}

	st = d.stats(viewer, "")
	if st.By != "account" || len(st.Accounts) != 2 || st.Pool == nil || len(st.Groups) != 2 || *st.Groups[0].Key != "work" ||
		st.Accounts[0]["cost_usd"] != *st.Groups[0].CostUSD {
		t.Errorf("by account: %+v", st)
	}

	expectStatus(t, d.do("GET", "/api/stats?by=week", "", "x-api-key", viewer), 400, "invalid_request_error")
}

func (d *daemonStack) stats(key, query string) statsAnswer {
	d.t.Helper()
	r := d.do("GET", "/api/stats?"+query, "", "x-api-key", key)
	expectStatus(d.t, r, 200, "")
	var st statsAnswer
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		d.t.Fatalf("%s: %s", err, r.body)
	}
	return st
}

// rawRequests is every row of GET /api/requests as JSON objects.
func (d *daemonStack) rawRequests(key string) []map[string]any {
	d.t.Helper()
	r := d.do("GET", "/api/requests?"+url.Values{"limit": {"1000"}}.Encode(), "", "x-api-key", key)
	expectStatus(d.t, r, 200, "")
	var page struct {
		Requests []map[string]any `json:"requests"`
	}
	if err := json.Unmarshal([]byte(r.body), &page); err != nil {
		d.t.Fatalf("%s: %s", err, r.body)
	}
	return page.Requests
}
