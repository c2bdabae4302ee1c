package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/internal/fakeapi"
	"github.com/claudeflare/claudeflare/store"
)

// probesOf counts the fake's recorded probe requests (one token).
func probesOf(h *harness, account string) []fakeapi.Recorded {
	var out []fakeapi.Recorded
	for _, r := range h.apiRequests() {
		if r.Account == account && requestModel(r.Body) != "" && string(r.Body) != msgBody && string(r.Body) != opusBody {
			out = append(out, r)
		}
	}
	return out
}

// A quarantine is re-checked by a probe at most every
// ratelimit.recheck_interval; a probe the upstream serves puts the
// account back (status ok, persisted).
func TestRecheckQuarantine(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.RateLimit.RecheckInterval = config.Duration(10 * time.Minute) }))
	h.addOAuth("a", 0, false)
	h.addOAuth("b", 1, false)
	h.reload()
	ctx := context.Background()
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 403,
		Body: errBody("permission_error", "This organization has been disabled.")})
	h.post(msgBody)
	if h.account("a").Status != store.StatusQuarantined {
		t.Fatal("not quarantined")
	}
	h.api.ResetRequests()
	h.srv.recheckDue(ctx) // first seen: no probe yet
	h.clock.Add(9 * time.Minute)
	h.srv.recheckDue(ctx)
	if n := len(probesOf(h, "a")); n != 0 {
		t.Fatalf("%d probes before the interval", n)
	}
	// Still refused: stays out.
	h.api.Inject(fakeapi.Fault{Account: "a", Kind: fakeapi.FaultStatus, Status: 403,
		Body: errBody("permission_error", "This organization has been disabled.")})
	h.clock.Add(time.Minute)
	h.srv.recheckDue(ctx)
	if p := probesOf(h, "a"); len(p) != 1 || string(p[0].Body) != ProbeBody {
		t.Fatalf("probes %d", len(p))
	}
	if h.account("a").Status != store.StatusQuarantined {
		t.Fatal("a refused probe cleared the quarantine")
	}
	h.srv.recheckDue(ctx) // not due again yet
	if n := len(probesOf(h, "a")); n != 1 {
		t.Fatalf("%d probes within one interval", n)
	}
	// Served: back in rotation, persisted.
	h.clock.Add(10 * time.Minute)
	h.srv.recheckDue(ctx)
	if n := len(probesOf(h, "a")); n != 2 {
		t.Fatalf("%d probes", n)
	}
	if row := h.account("a"); row.Status != store.StatusOK || row.StatusReason != "" {
		t.Fatalf("row %s %q", row.Status, row.StatusReason)
	}
	if st := h.srv.pool.stateOf(h.srv.pool.byID[h.account("a").ID], h.clock.Now()); st.Word != acctstate.OK {
		t.Fatalf("state %+v", st)
	}
}

// A far whole-account limit and a far model limit are re-checked (the
// model limit with a request of its family); a near one is left to heal
// by itself; a probe still limited keeps the block.
func TestRecheckFarLimits(t *testing.T) {
	h := newHarness(t)
	h.addOAuth("far", 0, false)
	h.addOAuth("model", 1, false)
	h.addOAuth("near", 2, false)
	h.addOAuth("spare", 3, false)
	h.reload()
	ctx := context.Background()
	now := h.clock.Now()
	far := now.Add(3 * 24 * time.Hour).Truncate(time.Second)
	h.api.Inject(fakeapi.Fault{Account: "far", Kind: fakeapi.FaultStatus, Status: 429, Headers: fakeapi.RateLimitHeaders("rejected", far)})
	h.api.Inject(fakeapi.Fault{Account: "model", Kind: fakeapi.FaultStatus, Status: 429, Headers: modelLimit429("", "seven_day_opus", far).Headers})
	h.api.Inject(fakeapi.Fault{Account: "near", Kind: fakeapi.FaultStatus, Status: 429, Headers: map[string]string{"retry-after": "120"}})
	h.post(opusBody)
	for _, n := range []string{"far", "near"} {
		if l := h.limit(n); !l.Blocked(h.clock.Now()) {
			t.Fatalf("%s not limited: %+v", n, l)
		}
	}
	if l := h.limit("model"); l.Models["opus"].IsZero() {
		t.Fatalf("model not limited: %+v", l)
	}
	h.api.ResetRequests()
	h.srv.recheckDue(ctx) // first seen
	// The far limit still holds at the first probe.
	h.api.Inject(fakeapi.Fault{Account: "far", Kind: fakeapi.FaultStatus, Status: 429, Headers: fakeapi.RateLimitHeaders("rejected", far)})
	h.clock.Add(5 * time.Minute)
	h.srv.recheckDue(ctx)
	if n := len(probesOf(h, "near")); n != 0 {
		t.Fatalf("near block probed %d times", n)
	}
	if p := probesOf(h, "far"); len(p) != 1 {
		t.Fatalf("far probed %d times", len(p))
	}
	if l := h.limit("far"); !l.Until.Equal(far) {
		t.Fatalf("far after a limited probe: %+v", l)
	}
	p := probesOf(h, "model")
	if len(p) != 1 || acctstate.Family(requestModel(p[0].Body)) != "opus" {
		t.Fatalf("model probes %d", len(p))
	}
	if l := h.limit("model"); len(l.Models) != 0 {
		t.Fatalf("model limit not cleared by a served probe: %+v", l)
	}
	// Next interval: far serves now.
	h.clock.Add(5 * time.Minute)
	h.srv.recheckDue(ctx)
	if l := h.limit("far"); l.Blocked(h.clock.Now()) {
		t.Fatalf("far not cleared: %+v", l)
	}
	if n := len(probesOf(h, "far")); n != 2 {
		t.Fatalf("far probed %d times", n)
	}
	h.stop()
	if row := h.account("far"); row.RateLimitedUntil != 0 {
		t.Fatalf("row %+v", row)
	}
	if row := h.account("model"); row.ModelLimits != "" {
		t.Fatalf("row %+v", row)
	}
}

// Every block heals by itself once its end passes: the next request may
// use the account.
func TestBlocksHeal(t *testing.T) {
	now := t0
	end := now.Add(time.Hour)
	for _, tc := range []struct {
		name  string
		limit LimitState
		fam   string
	}{
		{"limit", LimitState{Until: end, Reason: "rejected"}, ""},
		{"7d limit", LimitState{Until: end, Reason: "7d rejected"}, "opus"},
		{"cooldown", LimitState{Until: end, Reason: LimitCooldown, Cooldown: time.Minute}, ""},
		{"extra usage refused", LimitState{Until: end, Reason: WindowExtraUsage}, ""},
		{"refresh failed", LimitState{Until: end, Reason: LimitRefreshFailed}, ""},
		{"refresh blocked", LimitState{Until: end, Reason: LimitRefreshBlocked}, ""},
		{"unauthorized", LimitState{Until: end, Reason: LimitUnauthorized, Unauthorized: 2, UnauthStep: 2 * time.Minute}, ""},
		{"model limit", LimitState{Models: map[string]time.Time{"opus": end}}, "opus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &account{Name: "a", Status: store.StatusOK, limit: tc.limit}
			// The rest after an uncured 401 is not a rate limit (no wait
			// of the client's cures it).
			wantLimited := tc.limit.Reason != LimitUnauthorized
			if ok, limited, _, until := a.usableFor(now, tc.fam); ok || limited != wantLimited || !until.Equal(end) {
				t.Fatalf("before the end: ok %v limited %v until %v", ok, limited, until)
			}
			if ok, _, reason, _ := a.usableFor(end, tc.fam); !ok {
				t.Fatalf("at the end: %s", reason)
			}
			if st := a.state(end); st.Word != acctstate.OK {
				t.Fatalf("state at the end %+v", st)
			}
		})
	}
}
