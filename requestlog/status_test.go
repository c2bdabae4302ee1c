package requestlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/claudeflare/claudeflare/requestlog"
	"github.com/claudeflare/claudeflare/store"
)

// statusDBs is a real vault and request log in a temporary data dir.
type statusDBs struct {
	t        *testing.T
	vault    *store.DB
	log      *store.DB
	keyID    int64
	ids      map[string]int64
	requests int
}

var statusNow = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func newStatusDBs(t *testing.T) *statusDBs {
	t.Helper()
	dir := t.TempDir()
	v, err := store.OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	l, err := store.OpenLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	d := &statusDBs{t: t, vault: v, log: l, ids: map[string]int64{}}
	ctx := context.Background()
	if err := store.Tx(ctx, v, func(tx *sqlx.Tx) error {
		d.keyID, err = store.InsertDataKey(ctx, tx, "age1test", []byte("w"), []byte("p"), store.ToMS(statusNow))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return d
}

// account adds an account with the rate state st.
func (d *statusDBs) account(name, kind string, tier int, st store.RateState) {
	d.t.Helper()
	ctx := context.Background()
	id, err := store.InsertAccount(ctx, d.vault, store.NewAccount{Name: name, Kind: kind, Tier: tier, Priority: len(d.ids),
		KeyID: d.keyID, Sealed: []byte("x")}, statusNow)
	if err != nil {
		d.t.Fatal(err)
	}
	d.ids[name] = id
	if err := store.SaveRateState(ctx, d.vault, id, st); err != nil {
		d.t.Fatal(err)
	}
}

// request logs a request served by account at, with its tokens.
func (d *statusDBs) request(account string, at time.Time, input, output int64, session string) {
	d.t.Helper()
	d.requests++
	r := store.Request{ID: fmt.Sprintf("req-%d", d.requests), TS: store.ToMS(at), Method: "POST", Path: "/v1/messages",
		Account: account, Status: 200, InputTokens: input, OutputTokens: output, Session: session}
	if err := store.InsertRequests(context.Background(), d.log, []store.Request{r}, nil); err != nil {
		d.t.Fatal(err)
	}
}

func (d *statusDBs) status(opts requestlog.StatusOptions) requestlog.Status {
	d.t.Helper()
	if opts.Now.IsZero() {
		opts.Now = statusNow
	}
	st, err := requestlog.ComputeStatus(context.Background(), d.vault, d.log, opts)
	if err != nil {
		d.t.Fatal(err)
	}
	return st
}

func unknownRate() store.RateState { return store.RateState{Util5h: -1, Util7d: -1} }

func secs(p *int64) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

func near(p *int64, want int64) bool { return p != nil && math.Abs(float64(*p-want)) <= 1 }

// The estimate worked by hand: "a" has 5h utilization 0.5 after 500k
// tokens (ratio 1e-6 per token), "b" nothing known (borrows the ratio);
// the pool ran 180k tokens in the last 15 minutes (200/s). Capacity
// 0.5M + 1M drains in 7500 s, but a's window resets at 2h (7200 s): by
// then a is at 0.98 and b at 0.96; a starts again with 1M, b has 40k
// left, 1.04M more at 200/s is 5200 s: exhausted at 12400 s.
func TestStatusTimeToExhaustionByHand(t *testing.T) {
	d := newStatusDBs(t)
	d.account("a", store.KindOAuth, 1, store.RateState{Util5h: 0.5, Reset5h: store.ToMS(statusNow.Add(2 * time.Hour)), Util7d: -1})
	d.account("b", store.KindOAuth, 1, unknownRate())
	d.request("a", statusNow.Add(-4*time.Hour), 999999, 0, "") // before a's window: not counted in its ratio
	d.request("a", statusNow.Add(-2*time.Hour), 400000, 0, "")
	d.request("a", statusNow.Add(-5*time.Minute), 100000, 0, "")
	d.request("b", statusNow.Add(-10*time.Minute), 60000, 4000, "") // 60k + 5 x 4k = 80k weighted
	st := d.status(requestlog.StatusOptions{MaxUtilization: 1, Sessions: map[string]int{"a": 2}})

	p := st.Pool
	if p.Estimate != requestlog.EstimateRate || !near(p.TimeToExhaustionSeconds, 12400) {
		t.Fatalf("pool: %s %s (%s), want rate 12400", p.Estimate, secs(p.TimeToExhaustionSeconds), p.Method)
	}
	if p.ExhaustedAt == nil || *p.ExhaustedAt != statusNow.Add(12400*time.Second).Format(time.RFC3339) {
		t.Errorf("exhausted_at %v", p.ExhaustedAt)
	}
	if p.Usable != 2 || p.Total != 2 || p.TokensPerMinute != 12000 {
		t.Errorf("pool: usable %d/%d, %v tokens/min", p.Usable, p.Total, p.TokensPerMinute)
	}
	a, b := st.Accounts[0], st.Accounts[1]
	if a.Name != "a" || a.State != "ok" || *a.Utilization5h != 0.5 || a.Utilization7d != nil ||
		*a.Reset5h != "2026-12-02T14:00:00Z" || a.Reset7d != nil || a.Sessions == nil || *a.Sessions != 2 {
		t.Errorf("a: %+v", a)
	}
	// a alone: 500k left at 100k per 15 minutes = 4500 s, before its reset.
	if !near(a.TimeToLimitSeconds, 4500) {
		t.Errorf("a: time to limit %s, want 4500", secs(a.TimeToLimitSeconds))
	}
	if b.Utilization5h != nil || b.Sessions == nil || *b.Sessions != 0 {
		t.Errorf("b: %+v", b)
	}

	// The limit is routing.max_utilization: at 0.75 a has 250k left,
	// b 750k; 1M at 200/s is 5000 s, before a's reset.
	st = d.status(requestlog.StatusOptions{MaxUtilization: 0.75})
	if st.Pool.Estimate != requestlog.EstimateRate || !near(st.Pool.TimeToExhaustionSeconds, 5000) {
		t.Fatalf("at 0.75: %s %s", st.Pool.Estimate, secs(st.Pool.TimeToExhaustionSeconds))
	}
	if st.Accounts[0].Sessions != nil {
		t.Errorf("sessions unknown without the daemon, got %d", *st.Accounts[0].Sessions)
	}

	// Twenty minutes later nothing was served in the last 15: unknown.
	st = d.status(requestlog.StatusOptions{Now: statusNow.Add(20 * time.Minute), MaxUtilization: 1})
	if st.Pool.Estimate != requestlog.EstimateNoTraffic || st.Pool.TimeToExhaustionSeconds != nil || st.Pool.TokensPerMinute != 0 {
		t.Fatalf("no traffic: %+v", st.Pool)
	}
	// After a's reset its utilization is 0 and its reset unknown.
	st = d.status(requestlog.StatusOptions{Now: statusNow.Add(3 * time.Hour)})
	if a := st.Accounts[0]; a.Utilization5h == nil || *a.Utilization5h != 0 || a.Reset5h != nil {
		t.Errorf("after the reset: %+v", a)
	}
}

// States: a paused account and one that needs a login are not usable, a
// limited one rejoins the pool at the end of its limit; every account
// over the limit is exhaustion now; an API-key account never runs out.
func TestStatusStatesAndEdges(t *testing.T) {
	d := newStatusDBs(t)
	reset := statusNow.Add(time.Hour)
	d.account("full", store.KindOAuth, 5, store.RateState{Util5h: 0.97, Reset5h: store.ToMS(reset), Util7d: 0.2, Reset7d: store.ToMS(statusNow.Add(72 * time.Hour))})
	d.account("held", store.KindOAuth, 1, unknownRate())
	if err := store.SetPaused(context.Background(), d.vault, "held", true, statusNow); err != nil {
		t.Fatal(err)
	}
	d.account("gone", store.KindOAuth, 1, unknownRate())
	if err := store.SetStatus(context.Background(), d.vault, d.ids["gone"], store.StatusNeedsLogin, "refresh token revoked", statusNow); err != nil {
		t.Fatal(err)
	}
	d.request("full", statusNow.Add(-time.Minute), 1000000, 0, "")
	st := d.status(requestlog.StatusOptions{MaxUtilization: 0.95})
	if st.Pool.Estimate != requestlog.EstimateExhausted || !near(st.Pool.TimeToExhaustionSeconds, 0) || st.Pool.Usable != 1 || st.Pool.Total != 3 {
		t.Fatalf("all over the limit: %+v", st.Pool)
	}
	words := map[string]string{}
	for _, a := range st.Accounts {
		words[a.Name] = a.State + "/" + a.Reason
	}
	if words["held"] != "paused/" || words["gone"] != "needs_login/refresh token revoked" || words["full"] != "ok/" {
		t.Errorf("states: %v", words)
	}

	// Limited until its reset in an hour: exhausted now, back at the reset
	// with an empty 5h window (0.2 of 7d used: the 5h window binds).
	if err := store.SaveRateState(context.Background(), d.vault, d.ids["full"], store.RateState{RateLimitedUntil: store.ToMS(reset), RLStatus: "5h rejected",
		Util5h: 1, Reset5h: store.ToMS(reset), Util7d: 0.2, Reset7d: store.ToMS(statusNow.Add(72 * time.Hour))}); err != nil {
		t.Fatal(err)
	}
	st = d.status(requestlog.StatusOptions{MaxUtilization: 1})
	full := st.Accounts[0]
	if full.State != "limited" || full.Window != "5h" || full.Until == nil || *full.Until != reset.Format(time.RFC3339) {
		t.Errorf("limited: %+v", full)
	}
	if st.Pool.Estimate != requestlog.EstimateExhausted || st.Pool.Usable != 0 {
		t.Errorf("none usable: %+v", st.Pool)
	}

	// An API-key account in the pool: no window, never exhausted.
	d.account("key", store.KindAPIKey, 1, unknownRate())
	st = d.status(requestlog.StatusOptions{MaxUtilization: 1})
	if st.Pool.Estimate != requestlog.EstimateUnlimited || st.Pool.TimeToExhaustionSeconds != nil {
		t.Errorf("API key: %+v", st.Pool)
	}
}

// Without any account having served in a known window there is no ratio:
// unknown, not a guess.
func TestStatusNoData(t *testing.T) {
	d := newStatusDBs(t)
	d.account("a", store.KindOAuth, 1, unknownRate())
	d.request("a", statusNow.Add(-time.Minute), 1000, 10, "")
	st := d.status(requestlog.StatusOptions{MaxUtilization: 0.95})
	if st.Pool.Estimate != requestlog.EstimateNoData || st.Pool.TimeToExhaustionSeconds != nil {
		t.Fatalf("no data: %+v", st.Pool)
	}
	// A slow pool lasts past the horizon.
	if err := store.SaveRateState(context.Background(), d.vault, d.ids["a"], store.RateState{Util5h: 0.01, Reset5h: store.ToMS(statusNow.Add(4 * time.Hour)), Util7d: -1}); err != nil {
		t.Fatal(err)
	}
	st = d.status(requestlog.StatusOptions{MaxUtilization: 0.95})
	if st.Pool.Estimate != requestlog.EstimateLasts || st.Pool.TimeToExhaustionSeconds != nil {
		t.Fatalf("slow pool: %+v", st.Pool)
	}
}

// A session's account is the one of its latest request within a day; the
// JSON has the documented keys.
func TestStatusSessionAndJSON(t *testing.T) {
	d := newStatusDBs(t)
	d.account("a", store.KindOAuth, 1, unknownRate())
	d.account("b", store.KindOAuth, 1, unknownRate())
	d.request("b", statusNow.Add(-30*time.Hour), 10, 1, "s1") // too old
	d.request("a", statusNow.Add(-time.Hour), 10, 1, "s1")
	d.request("b", statusNow.Add(-time.Minute), 10, 1, "s1")
	d.request("a", statusNow.Add(-time.Second), 10, 1, "s2")
	st := d.status(requestlog.StatusOptions{SessionHash: "s1"})
	if st.Session == nil || st.Session.Account == nil || *st.Session.Account != "b" ||
		*st.Session.LastSeen != statusNow.Add(-time.Minute).Format(time.RFC3339) {
		t.Fatalf("session: %+v", st.Session)
	}
	ss, err := requestlog.SessionAccount(context.Background(), d.log, "s3", statusNow)
	if err != nil || ss.Account != nil {
		t.Fatalf("unknown session: %+v %v", ss, err)
	}
	ss, err = requestlog.SessionAccount(context.Background(), d.log, "s1", statusNow.Add(24*time.Hour))
	if err != nil || ss.Account != nil {
		t.Fatalf("a day later: %+v %v", ss, err)
	}

	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Now      string           `json:"now"`
		Accounts []map[string]any `json:"accounts"`
		Pool     map[string]any   `json:"pool"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Now != "2026-12-02T12:00:00Z" {
		t.Errorf("now %q", m.Now)
	}
	for _, k := range []string{"name", "kind", "priority", "tier", "state", "reason", "window", "family", "until",
		"utilization_5h", "utilization_7d", "reset_5h", "reset_7d", "sessions", "time_to_limit_seconds"} {
		if _, ok := m.Accounts[0][k]; !ok {
			t.Errorf("account: no %s in %s", k, b)
		}
	}
	for _, k := range []string{"usable", "total", "time_to_exhaustion_seconds", "exhausted_at", "estimate", "method",
		"tokens_per_minute", "max_utilization"} {
		if _, ok := m.Pool[k]; !ok {
			t.Errorf("pool: no %s in %s", k, b)
		}
	}
}

// A limited account rejoins the pool when its limit ends, with its window
// reset: a alone (ratio 1e-6, 500k left) would last 2500 s at 200/s; b
// comes back at 1800 s with 1M (the ratio borrowed), when a has 140k
// left: 1.14M more is 5700 s, exhausted at 7500 s.
func TestStatusLimitedAccountRejoins(t *testing.T) {
	d := newStatusDBs(t)
	d.account("a", store.KindOAuth, 1, store.RateState{Util5h: 0.5, Reset5h: store.ToMS(statusNow.Add(4 * time.Hour)), Util7d: -1})
	back := statusNow.Add(30 * time.Minute)
	d.account("b", store.KindOAuth, 1, store.RateState{RateLimitedUntil: store.ToMS(back), RLStatus: "5h rejected",
		Util5h: 1, Reset5h: store.ToMS(back), Util7d: -1})
	d.request("a", statusNow.Add(-time.Hour), 320000, 0, "")
	d.request("a", statusNow.Add(-5*time.Minute), 180000, 0, "")
	st := d.status(requestlog.StatusOptions{MaxUtilization: 1})
	if st.Pool.Usable != 1 || st.Pool.Estimate != requestlog.EstimateRate || !near(st.Pool.TimeToExhaustionSeconds, 7500) {
		t.Fatalf("pool: usable %d, %s %s, want rate 7500", st.Pool.Usable, st.Pool.Estimate, secs(st.Pool.TimeToExhaustionSeconds))
	}
	if b := st.Accounts[1]; b.State != "limited" || b.Window != "5h" || b.TimeToLimitSeconds != nil {
		t.Errorf("b: %+v", b)
	}
}
