package commands_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// stats --by with the real CLI on a real log: groups by model and by UTC
// day (every day of the period, - where there is no data, never 0s), the
// cost with the subscription footnote, NDJSON, and a bad --by.
func TestStatsBy(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "init")
	c.MustRun(c.fake.NewOAuthAccount("work"), "accounts", "add", "work", "--refresh-token-stdin")
	c.MustRun(c.fake.NewAPIKey("key"), "accounts", "add", "key", "--api-key-stdin")
	now := time.Now()
	cost := func(v float64) *float64 { return &v }
	rows := []store.Request{
		{ID: "1", TS: store.ToMS(now.Add(-time.Minute)), Account: "work", Model: "claude-sonnet-4-5", Client: "alice", Status: 200,
			DurationMS: 900, InputTokens: 1000, OutputTokens: 200, CostUSD: cost(0.006)},
		{ID: "2", TS: store.ToMS(now.Add(-2 * time.Minute)), Account: "key", Model: "claude-opus-4-5", Client: "bob", Status: 529,
			DurationMS: 50, CostUSD: cost(0)},
		{ID: "3", TS: store.ToMS(now.Add(-3 * time.Minute)), Account: "key", Model: "mystery-model", Status: 200, DurationMS: 10, InputTokens: 5},
	}
	for i := range rows {
		rows[i].Method, rows[i].Path = "POST", "/v1/messages"
	}
	if err := store.InsertRequests(context.Background(), c.openLog(), rows, nil); err != nil {
		t.Fatal(err)
	}

	out := c.MustRun("", "stats", "--by", "model")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "MODEL") || !strings.Contains(lines[0], "COST") ||
		!strings.HasPrefix(lines[1], "claude-sonnet-4-5") || !strings.Contains(lines[1], "$0.0060") ||
		!strings.HasPrefix(lines[3], "mystery-model") || !strings.HasSuffix(strings.TrimSpace(lines[3]), "-") ||
		!strings.HasPrefix(lines[4], "TOTAL") || !strings.Contains(lines[5], "API-equivalent") {
		t.Errorf("stats --by model:\n%s", out)
	}

	js := jsonLines(t, c.MustRun("", "stats", "--by", "model", "--json"))
	if len(js) != 4 || js[0]["scope"] != "model" || js[0]["key"] != "claude-sonnet-4-5" || js[0]["cost_usd"] != 0.006 ||
		js[2]["cost_usd"] != nil || js[2]["unpriced_requests"] != 1.0 || js[3]["scope"] != "total" || js[3]["requests"] != 3.0 {
		t.Errorf("stats --by model --json: %v", js)
	}

	out = c.MustRun("", "stats", "--by", "day", "--since", "72h")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	// Header, 4 UTC days (3 of them empty), total, footnote.
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "DAY (UTC)") || !strings.HasPrefix(lines[4], now.UTC().Format("2006-01-02")) || strings.Contains(out, "0s") {
		t.Fatalf("stats --by day:\n%s", out)
	}
	for _, l := range lines[1:4] {
		if f := strings.Fields(l); len(f) != 8 || f[1] != "-" || f[7] != "-" {
			t.Errorf("empty day %q: want - for every figure", l)
		}
	}

	js = jsonLines(t, c.MustRun("", "stats", "--by", "client", "--json"))
	if len(js) != 4 || js[3]["scope"] != "total" {
		t.Errorf("stats --by client --json: %v", js)
	}
	for _, l := range js[:3] {
		if l["key"] == nil && l["requests"] != 1.0 {
			t.Errorf("no client: %v", l)
		}
	}

	// The default, by account, keeps its lines and adds the cost.
	js = jsonLines(t, c.MustRun("", "stats", "--json"))
	byName := map[any]map[string]any{}
	for _, l := range js {
		byName[l["account"]] = l
	}
	if len(js) != 3 || byName["work"]["cost_usd"] != 0.006 || byName["key"]["cost_usd"] != 0.0 || byName["key"]["unpriced_requests"] != 1.0 ||
		js[2]["scope"] != "pool" || js[2]["cost_usd"] != 0.006 {
		t.Errorf("stats --json: %v", js)
	}
	if text := c.MustRun("", "stats"); !strings.Contains(text, "COST") || !strings.Contains(text, "API-equivalent") {
		t.Errorf("stats:\n%s", text)
	}

	// requests list --wide shows each cost, and says what it is.
	wide := strings.Split(strings.TrimSpace(c.MustRun("", "requests", "list", "--wide")), "\n")
	if len(wide) != 5 || !strings.Contains(wide[0], "COST") || !strings.Contains(wide[3], "$0.0060") || !strings.Contains(wide[1], "mystery-model ") ||
		!strings.Contains(wide[4], "API-equivalent") {
		t.Errorf("requests list --wide:\n%s", strings.Join(wide, "\n"))
	}
	if out := c.MustRun("", "requests", "list"); strings.Contains(out, "API-equivalent") || strings.Contains(out, "$") {
		t.Errorf("requests list (80 columns) shows a cost:\n%s", out)
	}

	o, errs, code := c.Run("", "stats", "--by", "week")
	if code != 2 || o != "" || !strings.HasPrefix(errs, "claudeflare: --by: unknown grouping \"week\"") {
		t.Errorf("--by week: exit %d, stdout %q, stderr %q", code, o, errs)
	}
}
