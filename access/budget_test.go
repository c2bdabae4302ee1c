package access_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/access"
	"github.com/claudeflare/claudeflare/internal/testutil"
	"github.com/claudeflare/claudeflare/store"
)

func TestParseBudget(t *testing.T) {
	for spec, want := range map[string]access.Budget{
		"50usd/month":        {Amount: 50, Unit: "usd", Period: "month"},
		"5USD/Week":          {Amount: 5, Unit: "usd", Period: "week"},
		" 2.5usd / day ":     {Amount: 2.5, Unit: "usd", Period: "day"},
		"2000000tokens/day":  {Amount: 2e6, Unit: "tokens", Period: "day"},
		"2Mtokens/day":       {Amount: 2e6, Unit: "tokens", Period: "day"},
		"1.5ktokens/week":    {Amount: 1500, Unit: "tokens", Period: "week"},
		"1token/month":       {Amount: 1, Unit: "tokens", Period: "month"},
		"0.01usd/day":        {Amount: 0.01, Unit: "usd", Period: "day"},
		"300000 tokens/week": {Amount: 3e5, Unit: "tokens", Period: "week"},
	} {
		got, err := access.ParseBudget(spec)
		if err != nil || got != want {
			t.Errorf("ParseBudget(%q) = %+v, %v; want %+v", spec, got, err, want)
		}
		if again, err := access.ParseBudget(got.String()); err != nil || again != got {
			t.Errorf("%q: String %q does not read back: %+v %v", spec, got.String(), again, err)
		}
	}
	for _, spec := range []string{
		"", "50", "50usd", "50/month", "usd/month", "50eur/month", "50usd/year", "50usd/", "-5usd/day", "0usd/day",
		"0tokens/day", "1.5tokens/day", "1e3tokens/day", "0x10usd/day", "infusd/day", "nanusd/day", "5usd/day/week",
		"1..5usd/day", "5kk tokens/day", "1e20usd/day", "+5usd/day",
	} {
		b, err := access.ParseBudget(spec)
		if err == nil || !errors.Is(err, access.ErrBadBudget) {
			t.Errorf("ParseBudget(%q) = %+v, %v; want an error", spec, b, err)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "e.g. 50usd/month") {
			t.Errorf("ParseBudget(%q): error %q is not one line naming the syntax", spec, msg)
		}
	}
	if _, err := access.ParseBudgets([]string{"5usd/day", "50usd/month"}); err == nil || !strings.Contains(err.Error(), "at most one budget in usd") {
		t.Errorf("two usd budgets: %v", err)
	}
	if bs, err := access.ParseBudgets([]string{"5usd/day", "1Mtokens/month"}); err != nil || len(bs) != 2 {
		t.Errorf("one usd and one tokens budget: %v %v", bs, err)
	}
}

func TestPeriodBounds(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct{ period, t, start, end string }{
		{"day", "2026-03-01T12:00:00Z", "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"},
		{"day", "2026-03-01T23:30:00-02:00", "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"}, // UTC, not local
		{"week", "2026-03-01T12:00:00Z", "2026-02-23T00:00:00Z", "2026-03-02T00:00:00Z"},     // a Sunday: from the Monday before
		{"week", "2026-03-02T00:00:00Z", "2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z"},     // a Monday
		{"month", "2026-02-28T23:59:59Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"},
		{"month", "2026-12-31T12:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
	} {
		s, e := access.PeriodBounds(tc.period, at(tc.t))
		if !s.Equal(at(tc.start)) || !e.Equal(at(tc.end)) {
			t.Errorf("%s of %s: [%s, %s), want [%s, %s)", tc.period, tc.t, s, e, tc.start, tc.end)
		}
	}
}

// budgetKey creates a client key with budgets and makes the guard see it.
func (h *harness) budgetKey(name string, specs ...string) string {
	h.t.Helper()
	bs, err := access.ParseBudgets(specs)
	if err != nil {
		h.t.Fatal(err)
	}
	k, _, err := access.CreateKeyWithBudgets(context.Background(), h.vdb, h.akey, name, access.RoleAPI, bs, "test", h.clk.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.g.Reload(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	return k
}

// served is a request's row as the proxy records it (what the daemon
// hands to RecordUsage through proxy.(*Server).OnRecord).
func served(client string, at time.Time, in, out int64, usd *float64) store.Request {
	return store.Request{ID: "req_" + client + at.Format("150405.000000000"), TS: store.ToMS(at), Method: "POST", Path: "/v1/messages",
		Status: 200, Client: client, InputTokens: in, OutputTokens: out, CostUSD: usd}
}

// events collects the guard's budget events.
type events struct {
	mu  sync.Mutex
	got []access.BudgetEvent
}

func (e *events) add(ev access.BudgetEvent) { e.mu.Lock(); e.got = append(e.got, ev); e.mu.Unlock() }
func (e *events) list() []access.BudgetEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]access.BudgetEvent(nil), e.got...)
}

// A key with a small token budget is served until its recorded use
// reaches it, then gets a 429 that says which budget, how much was used
// and when it resets, with x-should-retry: false and retry-after until
// the end of the UTC day; another key is still served; the next day
// (the clock moves, no sleep) it is served again. The alert subscriber
// hears of each crossing once per period.
func TestBudgetOverTokensGets429UntilThePeriodEnds(t *testing.T) {
	h := newHarness(t, nil)
	var evs events
	h.g.OnBudgetExceeded(evs.add)
	small := h.budgetKey("small", "1000tokens/day")
	other := h.key("other", access.RoleAPI)

	h.expect(h.do("POST", "/v1/messages", "x-api-key", small), http.StatusOK, "")
	h.g.RecordUsage(served("small", h.clk.Now(), 600, 300, nil))
	h.expect(h.do("POST", "/v1/messages", "x-api-key", small), http.StatusOK, "") // 900 of 1000
	h.g.RecordUsage(served("small", h.clk.Now(), 50, 100, nil))                   // 1050: over

	r := h.do("POST", "/v1/messages", "x-api-key", small)
	h.expect(r, http.StatusTooManyRequests, "rate_limit_error")
	if got := r.header.Get("X-Should-Retry"); got != "false" {
		t.Errorf("x-should-retry %q", got)
	}
	if got := r.header.Get("Retry-After"); got != "43200" { // 12:00 to midnight UTC
		t.Errorf("retry-after %q, want 43200", got)
	}
	if got := r.header.Get("X-Claudeflare-Limit"); got != "budget" {
		t.Errorf("x-claudeflare-limit %q", got)
	}
	for _, want := range []string{`client key \"small\"`, "1050 tokens of its 1000tokens/day budget", "today (UTC)", "2026-03-02T00:00:00Z", "not an Anthropic rate limit"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("429 body does not say %q: %s", want, r.body)
		}
	}
	// Not for every path: only the API is budgeted.
	h.expect(h.do("GET", "/api/keys", "x-api-key", small), http.StatusOK, "")
	h.expect(h.do("POST", "/v1/messages", "x-api-key", other), http.StatusOK, "")
	h.g.RecordUsage(served("small", h.clk.Now(), 10, 10, nil)) // over again: no second event
	if got := evs.list(); len(got) != 1 || got[0].Key != "small" || got[0].Unit != "tokens" || got[0].Period != "day" ||
		got[0].Limit != 1000 || got[0].Used != 1050 || !got[0].Resets.Equal(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("events %+v", got)
	}

	// Midnight UTC: a new day, a new budget.
	h.clk.Add(12 * time.Hour)
	h.expect(h.do("POST", "/v1/messages", "x-api-key", small), http.StatusOK, "")
	h.g.RecordUsage(served("small", h.clk.Now(), 1000, 0, nil))
	h.expect(h.do("POST", "/v1/messages", "x-api-key", small), http.StatusTooManyRequests, "rate_limit_error")
	if got := evs.list(); len(got) != 2 || got[1].Used != 1000 {
		t.Fatalf("events after the rollover %+v", got)
	}
	// A request that started yesterday and ends today counts for
	// yesterday (the log's ts), not against today's budget.
	h.clk.Add(24 * time.Hour)
	h.g.RecordUsage(served("small", h.clk.Now().Add(-time.Minute), 5000, 0, nil))
	h.expect(h.do("POST", "/v1/messages", "x-api-key", small), http.StatusOK, "")
}

// A USD budget counts cost_usd; a request without a price adds nothing.
func TestBudgetUSDCountsCost(t *testing.T) {
	h := newHarness(t, nil)
	k := h.budgetKey("spender", "1usd/month", "1Mtokens/week")
	usd := func(v float64) *float64 { return &v }
	h.g.RecordUsage(served("spender", h.clk.Now(), 10, 10, usd(0.6)))
	h.g.RecordUsage(served("spender", h.clk.Now(), 10, 10, nil))
	h.expect(h.do("POST", "/v1/messages", "x-api-key", k), http.StatusOK, "")
	h.g.RecordUsage(served("spender", h.clk.Now(), 10, 10, usd(0.45)))
	r := h.do("POST", "/v1/messages", "x-api-key", k)
	h.expect(r, http.StatusTooManyRequests, "rate_limit_error")
	if !strings.Contains(r.body, "1.05 usd of its 1usd/month budget for this month (UTC)") {
		t.Errorf("body %s", r.body)
	}
	if got := r.header.Get("Retry-After"); got != "2635200" { // to 2026-04-01T00:00:00Z
		t.Errorf("retry-after %q", got)
	}
}

// A request in flight when the key goes over finishes; the next is refused.
func TestBudgetLetsARequestInFlightFinish(t *testing.T) {
	h := newHarness(t, nil)
	k := h.budgetKey("slow", "100tokens/day")
	done := make(chan reply, 1)
	go func() { done <- h.do("POST", "/v1/slow", "x-api-key", k) }()
	<-h.inSlow
	h.g.RecordUsage(served("slow", h.clk.Now(), 500, 0, nil)) // another request of the key went over
	close(h.release)
	if r := <-done; r.status != http.StatusOK || r.body != "slow done" {
		t.Fatalf("the request in flight: %d %s", r.status, r.body)
	}
	h.expect(h.do("POST", "/v1/messages", "x-api-key", k), http.StatusTooManyRequests, "rate_limit_error")
}

// At start the guard reads each key's use in the current period from the
// request log (what came before it ran), and counts what it records
// after that on top; a key already over at start is refused without a
// new event (the run that saw it cross reported it).
func TestBudgetSeedsFromTheLogAtStart(t *testing.T) {
	h := newHarness(t, nil)
	k := h.budgetKey("seeded", "1000tokens/day", "2usd/week")
	h.key("over", access.RoleAPI)
	over, err := access.ParseBudgets([]string{"10tokens/month"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := access.UpdateKeyBudgets(context.Background(), h.vdb, h.akey, "over", over, "test", h.clk.Now()); err != nil {
		t.Fatal(err)
	}
	now := h.clk.Now()
	usd := 1.5
	rows := []store.Request{
		served("seeded", now.Add(-time.Hour), 400, 100, &usd),      // today: 500 tokens, 1.5 usd
		served("seeded", now.Add(-13*time.Hour), 5000, 0, nil),     // yesterday: not today's, this week's
		served("seeded", now.Add(-8*24*time.Hour), 0, 0, &usd),     // last week
		served("someone-else", now.Add(-time.Hour), 9000, 0, &usd), // another key
		served("over", now.Add(-11*time.Hour), 11, 0, nil),
	}
	rows[1].CacheReadInputTokens = 1
	if err := store.InsertRequests(context.Background(), h.ldb, rows, nil); err != nil {
		t.Fatal(err)
	}
	h.clk.Add(time.Second)
	var evs events
	g, err := access.New(context.Background(), access.Options{Config: h.cfg, VaultDB: h.vdb, AuditKey: h.akey, LogDB: h.ldb, Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	g.OnBudgetExceeded(evs.add)
	use := map[string]access.BudgetUse{}
	for _, kb := range g.Budgets() {
		for _, b := range kb.Budgets {
			use[kb.Name+" "+b.Unit] = b
		}
	}
	if got := use["seeded tokens"]; got.Used != 500 || got.Exceeded {
		t.Errorf("seeded tokens today: %+v", got)
	}
	if got := use["seeded usd"]; got.Used != 1.5 || !got.PeriodStart.Equal(time.Date(2026, 2, 23, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("seeded usd this week: %+v", got)
	}
	if got := use["over tokens"]; got.Used != 11 || !got.Exceeded {
		t.Errorf("over: %+v", got)
	}
	// What the new guard records adds to the seed: a request of the
	// seeded key (made through this guard) takes it over.
	g.RecordUsage(served("seeded", h.clk.Now(), 500, 0, nil))
	if got := evs.list(); len(got) != 1 || got[0].Key != "seeded" || got[0].Used != 1000 {
		t.Fatalf("events %+v", got)
	}
	srv := newServer(t, g)
	if st := do(t, srv, k); st != http.StatusTooManyRequests {
		t.Fatalf("seeded key over: %d", st)
	}
}

// A budget set by UpdateKeyBudgets (apikey update) reaches a running
// guard by its poll, and a budget lowered under the use already made is
// a crossing (one event); --no-budget lifts it.
func TestBudgetUpdateReachesARunningGuard(t *testing.T) {
	h := newHarness(t, nil)
	var evs events
	h.g.OnBudgetExceeded(evs.add)
	k := h.key("dev", access.RoleAPI)
	h.g.Start()
	h.g.RecordUsage(served("dev", h.clk.Now(), 300, 0, nil))
	h.expect(h.do("POST", "/v1/messages", "x-api-key", k), http.StatusOK, "")

	bs, _ := access.ParseBudgets([]string{"200tokens/week"})
	info, err := access.UpdateKeyBudgets(context.Background(), h.vdb, h.akey, "dev", bs, "cli:alice", h.clk.Now())
	if err != nil || len(info.Budgets) != 1 {
		t.Fatalf("update: %+v %v", info, err)
	}
	testutil.WaitFor(t, "the guard to apply the budget", func() bool {
		return h.do("POST", "/v1/messages", "x-api-key", k).status == http.StatusTooManyRequests
	})
	if got := evs.list(); len(got) != 1 || got[0].Period != "week" || got[0].Used != 300 {
		t.Fatalf("events %+v", got)
	}
	if n := countPrefix(h.auditRows(), `cli:alice client_key.updated: client key "dev" (`); n != 1 {
		t.Fatalf("audit: %q", h.auditRows())
	}
	if !strings.Contains(strings.Join(h.auditRows(), "\n"), "budgets set to 200tokens/week (were none)") {
		t.Fatalf("audit: %q", h.auditRows())
	}

	if _, err := access.UpdateKeyBudgets(context.Background(), h.vdb, h.akey, "dev", nil, "cli:alice", h.clk.Now()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the guard to lift the budget", func() bool {
		return h.do("POST", "/v1/messages", "x-api-key", k).status == http.StatusOK
	})
	if _, err := access.UpdateKeyBudgets(context.Background(), h.vdb, h.akey, "nobody", nil, "test", h.clk.Now()); !errors.Is(err, store.ErrNoClientKey) {
		t.Fatalf("update of an unknown key: %v", err)
	}
}

// The row's MAC covers the budgets: a budget raised, removed or added in
// vault.db without the master key makes the key fail authentication (it
// is not loaded with the edited budget, nor at all), apikey update
// refuses to bless it, and putting the text back makes it authentic.
func TestBudgetEditedInTheDatabaseIsRefused(t *testing.T) {
	h := newHarness(t, nil)
	k := h.budgetKey("capped", "100tokens/day")
	plain := h.key("plain", access.RoleAPI)
	var orig string
	if err := h.vdb.R.Get(&orig, `SELECT budgets FROM client_keys WHERE name = 'capped'`); err != nil {
		t.Fatal(err)
	}
	for _, edit := range []string{
		`UPDATE client_keys SET budgets = '[{"amount":100000000,"unit":"tokens","period":"day"}]' WHERE name = 'capped'`,
		`UPDATE client_keys SET budgets = NULL WHERE name = 'capped'`,
		`UPDATE client_keys SET budgets = '[]' WHERE name = 'capped'`,
		`UPDATE client_keys SET budgets = 'not json' WHERE name = 'capped'`,
		`UPDATE client_keys SET budgets = '[{"amount":1,"unit":"tokens","period":"day"}]' WHERE name = 'plain'`,
	} {
		if _, err := h.vdb.W.Exec(edit); err != nil {
			t.Fatal(err)
		}
		if err := h.g.Reload(context.Background()); err != nil {
			t.Fatalf("%s: reload: %v", edit, err)
		}
		key := k
		if strings.Contains(edit, "'plain'") {
			key = plain
		}
		h.expect(h.do("POST", "/v1/messages", "x-api-key", key), http.StatusUnauthorized, "authentication_error")
		keys, err := access.ListKeys(context.Background(), h.vdb, h.akey)
		if err != nil {
			t.Fatal(err)
		}
		tampered := 0
		for _, ki := range keys {
			if ki.Tampered {
				tampered++
			}
		}
		if tampered != 1 {
			t.Fatalf("%s: %d rows listed as tampered", edit, tampered)
		}
		name := "capped"
		if key == plain {
			name = "plain"
		}
		if _, err := access.UpdateKeyBudgets(context.Background(), h.vdb, h.akey, name, nil, "test", h.clk.Now()); !errors.Is(err, access.ErrTamperedKey) {
			t.Fatalf("%s: update of the tampered row: %v", edit, err)
		}
		// Put back as it was.
		if _, err := h.vdb.W.Exec(`UPDATE client_keys SET budgets = ? WHERE name = 'capped'`, orig); err != nil {
			t.Fatal(err)
		}
		if _, err := h.vdb.W.Exec(`UPDATE client_keys SET budgets = NULL WHERE name = 'plain'`); err != nil {
			t.Fatal(err)
		}
		h.g.Reload(context.Background())
		h.expect(h.do("POST", "/v1/messages", "x-api-key", key), http.StatusOK, "")
	}
	if n := countPrefix(h.auditRows(), "client_key.tampered"); n != 5 {
		t.Fatalf("%d tamper rows", n)
	}
}

// GET /api/keys: an api key sees its own budgets and use, a viewer every
// live key; never a key or a prefix.
func TestAPIKeysShowsBudgetsAndUse(t *testing.T) {
	h := newHarness(t, nil)
	dev := h.budgetKey("dev", "1000tokens/day", "5usd/month")
	h.key("plain", access.RoleAPI)
	viewer := h.key("grafana", access.RoleViewer)
	h.key("gone", access.RoleAPI)
	if _, err := access.RevokeKey(context.Background(), h.vdb, h.akey, "gone", "test", h.clk.Now()); err != nil {
		t.Fatal(err)
	}
	h.g.Reload(context.Background())
	usd := 1.25
	h.g.RecordUsage(served("dev", h.clk.Now(), 200, 50, &usd))

	type out struct {
		Keys []access.KeyBudgets `json:"keys"`
	}
	get := func(key string) out {
		r := h.do("GET", "/api/keys", "x-api-key", key)
		h.expect(r, http.StatusOK, "")
		if !strings.Contains(r.body, `"resets_at":"2026-03-02T00:00:00Z"`) {
			t.Fatalf("times not in UTC: %s", r.body)
		}
		if strings.Contains(r.body, "cf_") {
			t.Fatalf("a key or prefix in %s", r.body)
		}
		var o out
		if err := json.Unmarshal([]byte(r.body), &o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	own := get(dev)
	if len(own.Keys) != 1 || own.Keys[0].Name != "dev" || len(own.Keys[0].Budgets) != 2 {
		t.Fatalf("an api key's view: %+v", own)
	}
	b := own.Keys[0].Budgets
	if b[0].Unit != "tokens" || b[0].Used != 250 || b[0].Exceeded || !b[0].ResetsAt.Equal(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)) ||
		b[1].Unit != "usd" || b[1].Used != 1.25 || !b[1].PeriodStart.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("budgets %+v", b)
	}
	all := get(viewer)
	var names []string
	for _, k := range all.Keys {
		names = append(names, k.Name)
		if k.Budgets == nil {
			t.Errorf("%s: budgets null, want []", k.Name)
		}
	}
	if strings.Join(names, ",") != "dev,grafana,plain" {
		t.Fatalf("a viewer's view: %v", names)
	}
}

func newServer(t *testing.T, g *access.Guard) string {
	t.Helper()
	srv := httptest.NewServer(g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A request log that cannot be read does not keep the keys from loading
// (a revocation must still reach the guard): the guard warns, and the
// budgets count from its start.
func TestBudgetSeedFailureStillLoadsKeys(t *testing.T) {
	h := newHarness(t, nil)
	k := h.budgetKey("capped", "100tokens/day")
	broken, err := store.OpenLog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	broken.Close()
	logs := &syncBuffer{}
	g, err := access.New(context.Background(), access.Options{Config: h.cfg, VaultDB: h.vdb, AuditKey: h.akey, LogDB: broken,
		Now: h.clk.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatalf("a broken log stopped the guard: %v", err)
	}
	if st := do(t, newServer(t, g), k); st != http.StatusOK {
		t.Fatalf("the key: %d", st)
	}
	if !strings.Contains(logs.String(), "budgets count from now") {
		t.Fatalf("no warning: %s", logs.String())
	}
}
