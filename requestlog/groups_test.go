package requestlog_test

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

var groupsNow = time.Date(2026, 12, 2, 12, 30, 0, 0, time.UTC)

// groupsLog is a real log and vault with accounts "sub" (OAuth), "api"
// (API key) and the rows below.
func groupsLog(t *testing.T) (logDB, vaultDB *store.DB) {
	t.Helper()
	d := newStatusDBs(t)
	for _, a := range []struct{ name, kind string }{{"sub", store.KindOAuth}, {"api", store.KindAPIKey}, {"idle", store.KindAPIKey}} {
		d.account(a.name, a.kind, 0, unknownRate())
	}
	cost := func(v float64) *float64 { return &v }
	at := func(h, m int) int64 { return store.ToMS(time.Date(2026, 12, 2, h, m, 0, 0, time.UTC)) }
	rows := []store.Request{
		{ID: "1", TS: at(10, 5), Account: "sub", Model: "claude-sonnet-4-5", Client: "alice", Status: 200, InputTokens: 10, OutputTokens: 20, CostUSD: cost(0.5)},
		{ID: "2", TS: at(10, 6), Account: "sub", Model: "claude-opus-4-5", Client: "bob", Status: 200, InputTokens: 1, CacheReadInputTokens: 100, CostUSD: cost(2)},
		{ID: "3", TS: at(10, 7), Account: "api", Model: "claude-sonnet-4-5", Client: "alice", Status: 429, CostUSD: cost(0)},
		// 11:00 is empty
		{ID: "4", TS: at(12, 1), Account: "api", Model: "mystery", Client: "", Status: 200, InputTokens: 5, CacheCreationInputTokens: 7},
		{ID: "5", TS: at(12, 2), Account: "gone", Model: "claude-sonnet-4-5", Client: "alice", Status: 0, Error: "upstream gone", CostUSD: cost(0.25)},
		// The day before, out of a --since 3h window.
		{ID: "6", TS: at(0, 0) - 3600000, Account: "api", Model: "claude-haiku-4-5", Client: "bob", Status: 200, OutputTokens: 3, CostUSD: cost(1)},
	}
	for i := range rows {
		rows[i].Method, rows[i].Path = "POST", "/v1/messages"
	}
	if err := store.InsertRequests(context.Background(), d.log, rows, nil); err != nil {
		t.Fatal(err)
	}
	return d.log, d.vault
}

func nearUSD(a *float64, b float64) bool { return a != nil && math.Abs(*a-b) < 1e-12 }

func groups(t *testing.T, l, v *store.DB, by string, since time.Time) requestlog.Groups {
	t.Helper()
	g, err := requestlog.ComputeGroups(context.Background(), l, requestlog.GroupsOptions{By: by, Since: since, Vault: v, Now: func() time.Time { return groupsNow }})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGroupsByAccountModelClient(t *testing.T) {
	l, v := groupsLog(t)
	since := groupsNow.Add(-3 * time.Hour)

	g := groups(t, l, v, requestlog.ByAccount, since)
	if len(g.Groups) != 4 {
		t.Fatalf("by account: %+v", g.Groups)
	}
	// Vault order (idle has no requests), then the others.
	sub, api, idle, gone := g.Groups[0], g.Groups[1], g.Groups[2], g.Groups[3]
	if sub.Key != "sub" || sub.Requests != 2 || sub.Errors != 0 || sub.InputTokens != 11 || sub.CacheReadInputTokens != 100 || !nearUSD(sub.CostUSD, 2.5) || sub.Unpriced != 0 {
		t.Errorf("sub %+v", sub)
	}
	if api.Key != "api" || api.Requests != 2 || api.Errors != 1 || !nearUSD(api.CostUSD, 0) || api.Unpriced != 1 || api.CacheCreationInputTokens != 7 {
		t.Errorf("api %+v", api)
	}
	if idle.Key != "idle" || idle.Requests != 0 || idle.CostUSD != nil {
		t.Errorf("idle %+v", idle)
	}
	if gone.Key != "gone" || gone.Errors != 1 || !nearUSD(gone.CostUSD, 0.25) {
		t.Errorf("gone %+v", gone)
	}
	if tot := g.Total; tot.Requests != 5 || tot.Errors != 2 || !nearUSD(tot.CostUSD, 2.75) || tot.Unpriced != 1 {
		t.Errorf("total %+v", tot)
	}
	if !g.Subscription {
		t.Error("the OAuth account's cost is not flagged as API-equivalent")
	}

	g = groups(t, l, v, requestlog.ByModel, since)
	want := []struct {
		key  string
		cost float64
	}{{"claude-opus-4-5", 2}, {"claude-sonnet-4-5", 0.75}, {"mystery", -1}}
	if len(g.Groups) != len(want) {
		t.Fatalf("by model: %+v", g.Groups)
	}
	for i, w := range want {
		got := g.Groups[i]
		if got.Key != w.key || (w.cost < 0 && got.CostUSD != nil) || (w.cost >= 0 && !nearUSD(got.CostUSD, w.cost)) {
			t.Errorf("model %d: %+v, want %s at %v", i, got, w.key, w.cost)
		}
	}

	g = groups(t, l, v, requestlog.ByClient, time.Time{}) // the whole log
	if len(g.Groups) != 3 || g.Groups[0].Key != "bob" || !nearUSD(g.Groups[0].CostUSD, 3) || g.Groups[1].Key != "alice" || g.Groups[1].Requests != 3 ||
		g.Groups[2].Key != "" || g.Total.Requests != 6 {
		t.Errorf("by client: %+v", g.Groups)
	}
	lines, total := g.Lines()
	b, _ := json.Marshal(lines[2])
	if string(b) != `{"scope":"client","key":null,"requests":1,"errors":0,"input_tokens":5,"output_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":7,"cost_usd":null,"unpriced_requests":1}` {
		t.Errorf("no client: %s", b)
	}
	if total.Scope != "total" || total.Key != nil || !nearUSD(total.CostUSD, 3.75) {
		t.Errorf("total line %+v", total)
	}

	// Without a subscription account's priced rows, no note.
	g, err := requestlog.ComputeGroups(context.Background(), l, requestlog.GroupsOptions{By: requestlog.ByModel, Since: groupsNow.Add(-time.Hour), Vault: v})
	if err != nil || g.Subscription {
		t.Errorf("last hour: subscription %v, %v", g.Subscription, err)
	}
	if _, err := requestlog.ComputeGroups(context.Background(), l, requestlog.GroupsOptions{By: "week"}); err == nil {
		t.Error("an unknown grouping was accepted")
	}
}

// Hours and days are UTC buckets, every one from since to now, the empty
// ones included.
func TestGroupsByHourAndDay(t *testing.T) {
	l, v := groupsLog(t)
	g := groups(t, l, v, requestlog.ByHour, groupsNow.Add(-3*time.Hour)) // from 09:30: buckets 09, 10, 11, 12
	lines, _ := g.Lines()
	if len(lines) != 4 {
		t.Fatalf("hours: %+v", lines)
	}
	for i, w := range []struct {
		key      string
		requests int64
		cost     float64 // -1: null
	}{{"2026-12-02T09:00:00Z", 0, -1}, {"2026-12-02T10:00:00Z", 3, 2.5}, {"2026-12-02T11:00:00Z", 0, -1}, {"2026-12-02T12:00:00Z", 2, 0.25}} {
		got := lines[i]
		if got.Scope != "hour" || got.Key == nil || *got.Key != w.key || got.Requests != w.requests ||
			(w.cost < 0 && got.CostUSD != nil) || (w.cost >= 0 && !nearUSD(got.CostUSD, w.cost)) {
			t.Errorf("hour %d: %+v, want %+v", i, got, w)
		}
	}

	g = groups(t, l, v, requestlog.ByDay, time.Time{})
	lines, total := g.Lines()
	if len(lines) != 2 || *lines[0].Key != "2026-12-01T00:00:00Z" || lines[0].Requests != 1 || *lines[1].Key != "2026-12-02T00:00:00Z" || lines[1].Requests != 5 || total.Requests != 6 {
		t.Errorf("days: %+v", lines)
	}
}

// The by-account stats lines (stats --json, GET /api/stats) carry the
// cost too.
func TestStatsLinesHaveCost(t *testing.T) {
	l, v := groupsLog(t)
	st, err := requestlog.ComputeStats(context.Background(), l, requestlog.StatsOptions{Vault: v, Now: func() time.Time { return groupsNow }})
	if err != nil {
		t.Fatal(err)
	}
	accts, pool := st.Lines()
	if accts[0].Account == nil || *accts[0].Account != "sub" || !nearUSD(accts[0].CostUSD, 2.5) || accts[2].CostUSD != nil || accts[1].UnpricedRequests != 1 {
		t.Errorf("accounts %+v", accts)
	}
	if !nearUSD(pool.CostUSD, 3.75) || pool.UnpricedRequests != 1 {
		t.Errorf("pool %+v", pool)
	}
}
