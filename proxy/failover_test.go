package proxy

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

// noResets removes every reset the fake sends by default.
var noResets = map[string]string{
	fakeapi.UnifiedPrefix + "reset":    "",
	fakeapi.UnifiedPrefix + "5h-reset": "",
	fakeapi.UnifiedPrefix + "7d-reset": "",
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// TestFailoverBeforeFirstByte: every failover rule moves the request from
// account a to account b, and leaves a in the state the rule says.
func TestFailoverBeforeFirstByte(t *testing.T) {
	hardReset := time.Now().Add(3 * time.Hour).Truncate(time.Second)
	for _, tc := range []struct {
		name  string
		fault fakeapi.Fault
		setup func(h *harness)
		check func(t *testing.T, h *harness, now time.Time)
	}{
		{
			name:  "429 with retry-after quarantines until then",
			fault: fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{"retry-after": "120"}},
			check: func(t *testing.T, h *harness, now time.Time) {
				if l := h.limit("a"); !l.Until.Equal(now.Add(120 * time.Second)) {
					t.Fatalf("until %v, want now+120s", l.Until.Sub(now))
				}
			},
		},
		{
			name:  "429 without any reset cools down 30s",
			fault: fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 429, Headers: noResets},
			check: func(t *testing.T, h *harness, now time.Time) {
				if l := h.limit("a"); l.Cooldown != 30*time.Second || !l.Until.Equal(now.Add(30*time.Second)) || l.Reason != "cooldown" {
					t.Fatalf("limit %+v", l)
				}
			},
		},
		{
			name: "hard unified status quarantines until the unified reset",
			fault: fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 429,
				Headers: fakeapi.RateLimitHeaders("rejected", hardReset)},
			check: func(t *testing.T, h *harness, now time.Time) {
				if l := h.limit("a"); !l.Until.Equal(hardReset) || l.Reason != "rejected" {
					t.Fatalf("limit %+v", l)
				}
			},
		},
		{
			name: "hard status on a 403",
			fault: fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 403,
				Headers: merge(fakeapi.RateLimitHeaders("allowed", hardReset), map[string]string{
					fakeapi.UnifiedPrefix + "status": "payment_required"})},
			check: func(t *testing.T, h *harness, now time.Time) {
				if l := h.limit("a"); !l.Until.Equal(hardReset) {
					t.Fatalf("limit %+v", l)
				}
			},
		},
		{
			// No check: a stays usable (asserted below for every case
			// without one).
			name:  "529 never rests the account",
			fault: fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 529},
		},
		{
			name:  "429 without any rate-limit header never rests the account",
			fault: fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 429, Bare: true},
		},
		{
			name:  "500",
			fault: fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 500},
		},
		{
			name:  "503",
			fault: fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 503},
		},
		{
			name:  "connection reset before headers",
			fault: fakeapi.Fault{Kind: fakeapi.FaultResetBeforeHeaders},
		},
		{
			name:  "401 that a refresh cannot cure",
			setup: func(h *harness) { h.api.RevokeAccount("a") },
			check: func(t *testing.T, h *harness, now time.Time) {
				if a := h.account("a"); a.Status != store.StatusNeedsLogin {
					t.Fatalf("status %q", a.Status)
				}
				if n := strings.Count(h.logs.String(), "needs login: out of rotation"); n != 1 {
					t.Fatalf("needs-login logged %d times", n)
				}
				if !strings.Contains(h.logs.String(), "claudeflare accounts login a") {
					t.Fatalf("the needs-login hint does not name `accounts login`: %s", h.logs.String())
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.addOAuth("a", 0, false)
			h.addOAuth("b", 1, false)
			h.reload()
			if tc.fault.Kind != 0 {
				tc.fault.Account = "a"
				h.api.Inject(tc.fault)
			}
			if tc.setup != nil {
				tc.setup(h)
			}
			now := h.clock.Now()
			rep := h.post(msgBody)
			if rep.status != 200 {
				t.Fatalf("status %d: %s", rep.status, rep.body)
			}
			row := h.lastRow()
			if row.Account != "b" || row.Attempts != 2 || row.Status != 200 || row.EndState != EndComplete {
				t.Fatalf("row %+v", row)
			}
			if len(h.sleeps) != 0 {
				t.Fatalf("slept %v before moving to another account", h.sleeps)
			}
			if tc.check != nil {
				tc.check(t, h, now)
			}
			// A 529, a plain 5xx, a connection error or a 429 without
			// rate-limit headers does not take a out of rotation; the
			// others do.
			blocking := tc.check != nil
			h.srv.pool.mu.Lock()
			usable, _, _ := h.srv.pool.byID[h.account("a").ID].usable(now)
			h.srv.pool.mu.Unlock()
			if usable == blocking {
				t.Fatalf("a usable=%v after %s", usable, tc.name)
			}
		})
	}
}

func TestFailover401CuredByOneRefresh(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	h.api.ExpireAccessTokens("a")
	rep := h.post(msgBody)
	if rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	if row := h.lastRow(); row.Account != "a" || row.Attempts != 2 {
		t.Fatalf("row %+v", row)
	}
	if n := h.api.RefreshCount("a"); n != 1 {
		t.Fatalf("%d refreshes", n)
	}
	// The rotated refresh token is in the vault.
	s, err := h.vault.Secrets(context.Background(), h.account("a").ID)
	if err != nil || s.RefreshToken != h.api.CurrentRefreshToken("a") || s.Version != 2 {
		t.Fatalf("vault not updated: version %d err %v", s.Version, err)
	}
}

func TestNoRetryAfterFirstByte(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	h.api.SetStreamShape(10, 16)
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultResetMidStream, AfterEvents: 3})
	rep := h.post(streamBody)
	if rep.status != 200 || rep.err == nil {
		t.Fatalf("want a broken 200 stream, got %d err %v", rep.status, rep.err)
	}
	if !strings.Contains(string(rep.body), "message_start") || strings.Contains(string(rep.body), "message_stop") {
		t.Fatalf("body %q", rep.body)
	}
	if n := len(h.apiRequests()); n != 1 {
		t.Fatalf("%d upstream requests after the first byte", n)
	}
	if row := h.lastRow(); row.Account != "a" || row.EndState != EndUpstreamError || row.InputTokens != 25 {
		t.Fatalf("row %+v", row)
	}
}

// An overloaded_error inside a stream is Anthropic's load: the account
// does not rest for it.
func TestInStreamOverloadDoesNotRest(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStreamError, AfterEvents: 2})
	now := h.clock.Now()
	rep := h.post(streamBody)
	if rep.status != 200 || !strings.Contains(string(rep.body), "event: error") {
		t.Fatalf("%d %q", rep.status, rep.body)
	}
	if row := h.lastRow(); row.EndState != EndUpstreamError || !strings.Contains(row.Error, "overloaded_error") {
		t.Fatalf("row %+v", row)
	}
	if l := h.limit("a"); !l.Until.IsZero() || l.Blocked(now) {
		t.Fatalf("limit %+v", l)
	}
	// The next request goes to a, its session account, and is served.
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("after the overload: %d %s", rep.status, rep.body)
	}
	if row := h.lastRow(); row.Account != "a" {
		t.Fatalf("row %+v", row)
	}
}

func TestRetrySameAccountBacksOff(t *testing.T) {
	h := newHarness(t)
	h.addAPIKey("only", 0)
	h.reload()
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 500, Count: 2})
	rep := h.post(msgBody)
	if rep.status != 200 {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	if got := h.sleeps; len(got) != 2 || got[0] != time.Second || got[1] != 2*time.Second {
		t.Fatalf("sleeps %v, want [1s 2s]", got)
	}
	if row := h.lastRow(); row.Attempts != 3 {
		t.Fatalf("row %+v", row)
	}

	// Out of tries: the upstream's last answer passes through.
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 503, Count: 3})
	rep = h.post(msgBody)
	if rep.status != 503 || decodeError(t, rep.body).Error.Type != "api_error" {
		t.Fatalf("%d %s", rep.status, rep.body)
	}
	if row := h.lastRow(); row.Attempts != 3 || row.Status != 503 {
		t.Fatalf("row %+v", row)
	}
}

func TestEveryAccountLimited429(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{"retry-after": "60"}})
	h.api.Inject(fakeapi.Fault{Account: "b", Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{"retry-after": "7200"}})
	check := func(rep reply) {
		t.Helper()
		if rep.status != 429 || rep.header.Get("Retry-After") != "60" {
			t.Fatalf("%d retry-after %q: %s", rep.status, rep.header.Get("Retry-After"), rep.body)
		}
		if e := decodeError(t, rep.body); e.Error.Type != "rate_limit_error" || !strings.Contains(e.Error.Message, "a: limited (rate_limited) until") {
			t.Fatalf("%+v", e)
		}
		if rep.header.Get("X-Claudeflare-Request-Id") == "" {
			t.Fatal("no request id")
		}
	}
	check(h.post(msgBody))
	// The next request is refused without reaching the upstream.
	h.api.ResetRequests()
	check(h.post(msgBody))
	if n := len(h.apiRequests()); n != 0 {
		t.Fatalf("%d upstream requests while every account is limited", n)
	}
	if row := h.lastRow(); row.Status != 429 || row.Attempts != 0 {
		t.Fatalf("row %+v", row)
	}
	// A reset hours away: retrying cannot help.
	h.clock.Add(61 * time.Second)
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{"retry-after": "36000"}})
	rep := h.post(msgBody)
	if rep.status != 429 || rep.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("%d %v", rep.status, rep.header)
	}
	if ra, _ := strconv.Atoi(rep.header.Get("Retry-After")); ra < 7000 || ra > 7200 {
		t.Fatalf("retry-after %d", ra)
	}
	// Once the reset passes, the account is used again.
	h.clock.Add(11 * time.Hour)
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatalf("after the reset: %d", rep.status)
	}
}

func TestNoneUsable503(t *testing.T) {
	h := newHarness(t)
	rep := h.post(msgBody)
	if rep.status != 503 || rep.header.Get("X-Should-Retry") != "false" ||
		!strings.Contains(decodeError(t, rep.body).Error.Message, "claudeflare accounts add") {
		t.Fatalf("no accounts: %d %s", rep.status, rep.body)
	}
	ctx := context.Background()
	h.addOAuth("a", 0, false)
	bID := h.addOAuth("b", 1, false)
	if err := store.SetPaused(ctx, h.vdb, "a", true, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := h.vault.MarkNeedsLogin(ctx, bID, "invalid_grant"); err != nil {
		t.Fatal(err)
	}
	h.reload()
	rep = h.post(msgBody)
	msg := decodeError(t, rep.body).Error.Message
	if rep.status != 503 || !strings.Contains(msg, "a: paused") || !strings.Contains(msg, "b: needs_login: invalid_grant") {
		t.Fatalf("%d %s", rep.status, msg)
	}
	if len(h.apiRequests()) != 0 {
		t.Fatal("reached the upstream")
	}
}

func TestQuarantineSurvivesRestart(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{"retry-after": "3600"}})
	now := h.clock.Now()
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatal(rep.status)
	}
	h.restart()
	if l := h.limit("a"); !l.Until.Equal(now.Add(time.Hour)) {
		t.Fatalf("after restart: %+v", l)
	}
	h.api.ResetRequests()
	if rep := h.post(msgBody); rep.status != 200 {
		t.Fatal(rep.status)
	}
	if reqs := h.apiRequests(); len(reqs) != 1 || reqs[0].Account != "b" {
		t.Fatalf("quarantined account tried after restart: %+v", reqs)
	}
}

func TestSessionStrategyStaysOnOneAccount(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.SessionDurationMS = 60_000 }))
	h.addAPIKey("a", 0)
	h.addAPIKey("b", 0)
	h.reload()
	for range 5 {
		h.post(msgBody)
	}
	for _, r := range h.apiRequests() {
		if r.Account != "a" {
			t.Fatalf("session moved to %s", r.Account)
		}
	}
}

func TestRoundRobinSpreads(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.LBStrategy = config.StrategyRoundRobin }))
	h.addAPIKey("a", 0)
	h.addAPIKey("b", 0)
	h.reload()
	for range 4 {
		h.post(msgBody)
	}
	n := map[string]int{}
	for _, r := range h.apiRequests() {
		n[r.Account]++
	}
	if n["a"] != 2 || n["b"] != 2 {
		t.Fatalf("spread %v", n)
	}
}

var _ = http.MethodPost

func TestTokenEndpointDownMovesOn(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, true) // needs a refresh
	h.addOAuth("b", 1, false)
	h.reload()
	h.api.FailTokenEndpoint(500, 5)
	rep := h.post(msgBody)
	if rep.status != 200 || h.lastRow().Account != "b" {
		t.Fatalf("%d %+v", rep.status, h.lastRow())
	}
	if a := h.account("a"); a.Status != store.StatusOK {
		t.Fatal("a transient token endpoint failure must not need a login")
	}
	if !h.limit("a").Blocked(h.clock.Now()) {
		t.Fatal("a not rested after the failed refresh")
	}
}

func TestRetryBacksOffOnlyOnRepeats(t *testing.T) {
	h := newHarness(t)
	h.addAPIKey("a", 0)
	h.addAPIKey("b", 1)
	h.reload()
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 502, Count: 3})
	rep := h.post(msgBody)
	if rep.status != 502 {
		t.Fatalf("%d", rep.status)
	}
	var order []string
	for _, r := range h.apiRequests() {
		order = append(order, r.Account)
	}
	if strings.Join(order, ",") != "a,b,a" {
		t.Fatalf("tries %v", order)
	}
	if len(h.sleeps) != 1 || h.sleeps[0] != time.Second {
		t.Fatalf("sleeps %v, want [1s] (only before the repeat)", h.sleeps)
	}
}

// A 529 is Anthropic's overload, not the account's limit: no account
// rests for it, and when every account answered 529 the request is tried
// again after a backoff, within RETRY_ATTEMPTS, instead of the client
// getting the 529 (or claudeflare's own 429 calling them all limited).
func TestOverloadedEverywhereStillTries(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 529, Count: 2})
	rep := h.post(msgBody)
	if rep.status != 200 {
		t.Fatalf("both overloaded once: %d %s", rep.status, rep.body)
	}
	if row := h.lastRow(); row.Status != 200 || row.Attempts != 3 || row.Account != "a" {
		t.Fatalf("row %+v", row)
	}
	if len(h.sleeps) != 1 || h.sleeps[0] != time.Second {
		t.Fatalf("sleeps %v, want [1s] (before the repeat on a)", h.sleeps)
	}
	for _, name := range []string{"a", "b"} {
		if l := h.limit(name); l.Blocked(h.clock.Now()) {
			t.Fatalf("%s resting after a 529: %+v", name, l)
		}
	}
	// Out of tries: the upstream's last 529 passes through.
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 529, Count: 3})
	rep = h.post(msgBody)
	if rep.status != 529 || !strings.Contains(string(rep.body), "overloaded_error") {
		t.Fatalf("overloaded on every try: %d %s", rep.status, rep.body)
	}
	// Nothing rests: the next request is served at once.
	rep = h.post(msgBody)
	if rep.status != 200 {
		t.Fatalf("after the overload: %d %s", rep.status, rep.body)
	}
	if row := h.lastRow(); row.Status != 200 || row.Attempts != 1 {
		t.Fatalf("row %+v", row)
	}

	// A real rate limit on every account still gets claudeflare's 429.
	reset := h.clock.Now().Add(time.Hour)
	h.api.Inject(fakeapi.Fault{Kind: fakeapi.FaultStatus, Status: 429, Count: 4, Headers: fakeapi.RateLimitHeaders("rejected", reset)})
	h.post(msgBody)
	rep = h.post(msgBody)
	if rep.status != 429 || rep.header.Get("retry-after") == "" || !strings.Contains(string(rep.body), "rate limited") {
		t.Fatalf("all limited: %d %s", rep.status, rep.body)
	}
}
