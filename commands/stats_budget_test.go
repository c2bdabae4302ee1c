package commands_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/store"
)

// Issue 18 item 4: stats --by client shows each client key's budgets and
// their use in the current period (the BUDGET column; NDJSON "budgets" as
// apikey list --json), - for a key without one and for a client that is
// no key, without the master key (stats reads no secret).
func TestStatsByClientShowsBudgets(t *testing.T) {
	c := newCLI(t)
	c.MustRun("", "apikey", "create", "alice", "--budget", "10usd/month", "--budget", "1000tokens/day")
	c.MustRun("", "apikey", "create", "bob")
	now := time.Now()
	cost := func(v float64) *float64 { return &v }
	rows := []store.Request{
		// alice: 2.5 usd and 250 billed tokens this period, in two requests.
		{ID: "1", TS: store.ToMS(now), Model: "claude-sonnet-4-5", Client: "alice", Status: 200, InputTokens: 100, OutputTokens: 50, CostUSD: cost(2)},
		{ID: "2", TS: store.ToMS(now), Model: "claude-sonnet-4-5", Client: "alice", Status: 200, InputTokens: 60, CacheReadInputTokens: 40, CostUSD: cost(0.5)},
		{ID: "3", TS: store.ToMS(now), Model: "claude-sonnet-4-5", Client: "bob", Status: 200, InputTokens: 10, CostUSD: cost(0.1)},
		{ID: "4", TS: store.ToMS(now), Model: "claude-sonnet-4-5", Client: "mallory", Status: 401},
	}
	for i := range rows {
		rows[i].Method, rows[i].Path = "POST", "/v1/messages"
	}
	if err := store.InsertRequests(context.Background(), c.openLog(), rows, nil); err != nil {
		t.Fatal(err)
	}

	out := c.MustRun("", "stats", "--by", "client")
	for _, want := range []string{
		`(?m)^CLIENT\s.*\sCOST\s+BUDGET$`,
		`(?m)^alice\s+2\s.*\s10usd/month 25%, 1000tokens/day 25%$`,
		`(?m)^bob\s+1\s.*\s-$`,
		`(?m)^mallory\s+1\s.*\s-$`,
		`(?m)^TOTAL\s+4\s.*\s\$2\.60$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("stats --by client does not match %s:\n%s", want, out)
		}
	}

	js := jsonLines(t, c.MustRun("", "stats", "--by", "client", "--json"))
	byKey := map[any]map[string]any{}
	for _, l := range js {
		byKey[l["key"]] = l
	}
	alice, _ := byKey["alice"]["budgets"].([]any)
	if len(js) != 4 || len(alice) != 2 {
		t.Fatalf("stats --by client --json: %v", js)
	}
	usd, tokens := alice[0].(map[string]any), alice[1].(map[string]any)
	start := time.Date(now.UTC().Year(), now.UTC().Month(), 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	if usd["amount"] != 10.0 || usd["unit"] != "usd" || usd["period"] != "month" || usd["used"] != 2.5 || usd["exceeded"] != false ||
		usd["period_start"] != start || !strings.HasSuffix(usd["resets_at"].(string), "-01T00:00:00Z") ||
		tokens["unit"] != "tokens" || tokens["period"] != "day" || tokens["used"] != 250.0 {
		t.Errorf("alice's budgets: %v", alice)
	}
	for _, k := range []string{"bob", "mallory"} {
		if bs, ok := byKey[k]["budgets"].([]any); !ok || len(bs) != 0 {
			t.Errorf("%s: budgets %v, want []", k, byKey[k]["budgets"])
		}
	}
	if _, ok := js[3]["budgets"]; ok || js[3]["scope"] != "total" {
		t.Errorf("total line: %v", js[3])
	}
}
