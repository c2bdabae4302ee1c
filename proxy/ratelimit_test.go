package proxy

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestParseRateLimit(t *testing.T) {
	reset := t0.Add(2 * time.Hour)
	h := hdr(
		"anthropic-ratelimit-unified-status", "Rejected",
		"anthropic-ratelimit-unified-reset", strconv.FormatInt(reset.Unix(), 10),
		"anthropic-ratelimit-unified-remaining", "0",
		"anthropic-ratelimit-unified-5h-status", "rejected",
		"anthropic-ratelimit-unified-5h-reset", reset.Format(time.RFC3339),
		"anthropic-ratelimit-unified-5h-utilization", "1.02",
		"anthropic-ratelimit-unified-7d-status", "allowed_warning",
		"anthropic-ratelimit-unified-7d-reset", strconv.FormatInt(t0.Add(72*time.Hour).UnixMilli(), 10),
		"anthropic-ratelimit-unified-7d-utilization", "85%",
		"retry-after", "120",
	)
	rl := ParseRateLimit(h, t0)
	if rl.Status != "rejected" || !rl.Reset.Equal(reset) || rl.Remaining != 0 {
		t.Fatalf("unified: %+v", rl)
	}
	if rl.Status5h != "rejected" || !rl.Reset5h.Equal(reset) || rl.Util5h != 1.02 {
		t.Fatalf("5h: %+v", rl)
	}
	if rl.Status7d != "allowed_warning" || !rl.Reset7d.Equal(t0.Add(72*time.Hour)) || rl.Util7d != 0.85 {
		t.Fatalf("7d: %+v", rl)
	}
	if !rl.RetryAfter.Equal(t0.Add(120 * time.Second)) {
		t.Fatalf("retry-after: %v", rl.RetryAfter)
	}
	if !rl.Hard() || !rl.ResetAt().Equal(reset) {
		t.Fatalf("classify: hard=%v reset=%v", rl.Hard(), rl.ResetAt())
	}
}

func TestParseRateLimitRetryAfterForms(t *testing.T) {
	date := t0.Add(90 * time.Second)
	for _, tc := range []struct {
		name string
		h    http.Header
		want time.Time
	}{
		{"seconds", hdr("retry-after", "30"), t0.Add(30 * time.Second)},
		{"http date", hdr("retry-after", date.Format(http.TimeFormat)), date},
		{"x-ratelimit-reset", hdr("x-ratelimit-reset", date.Format(time.RFC3339)), date},
		{"garbage", hdr("retry-after", "soon", "x-ratelimit-reset", "never"), time.Time{}},
		{"past", hdr("x-ratelimit-reset", t0.Add(-time.Hour).Format(time.RFC3339)), time.Time{}},
		{"negative", hdr("retry-after", "-5"), time.Time{}},
		{"years", hdr("retry-after", "999999999"), time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseRateLimit(tc.h, t0).ResetAt()
			if !got.Equal(tc.want) {
				t.Fatalf("ResetAt = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestParseRateLimitAPIKeyResets reads the API-key families' resets
// (RFC 3339) as Anthropic sends them on an API key's 429: the reset of the
// exhausted family, else the soonest one; retry-after still wins;
// malformed values are ignored.
func TestParseRateLimitAPIKeyResets(t *testing.T) {
	at := func(d time.Duration) string { return t0.Add(d).UTC().Format(time.RFC3339) }
	// Recorded from an API key's 429 (tokens exhausted, requests not).
	recorded := []string{
		"anthropic-ratelimit-requests-limit", "50",
		"anthropic-ratelimit-requests-remaining", "49",
		"anthropic-ratelimit-requests-reset", at(2 * time.Second),
		"anthropic-ratelimit-tokens-limit", "40000",
		"anthropic-ratelimit-tokens-remaining", "0",
		"anthropic-ratelimit-tokens-reset", at(45 * time.Second),
		"anthropic-ratelimit-input-tokens-limit", "30000",
		"anthropic-ratelimit-input-tokens-remaining", "0",
		"anthropic-ratelimit-input-tokens-reset", at(40 * time.Second),
		"anthropic-ratelimit-output-tokens-limit", "8000",
		"anthropic-ratelimit-output-tokens-remaining", "8000",
		"anthropic-ratelimit-output-tokens-reset", at(time.Second),
		"request-id", "req_011CV",
	}
	for _, tc := range []struct {
		name string
		kv   []string
		want time.Duration // 0: none
	}{
		{"exhausted families: the latest of their resets", recorded, 45 * time.Second},
		{"retry-after wins", append(append([]string(nil), recorded...), "retry-after", "9"), 9 * time.Second},
		{"none exhausted: the soonest reset", []string{
			"anthropic-ratelimit-requests-remaining", "3", "anthropic-ratelimit-requests-reset", at(30 * time.Second),
			"anthropic-ratelimit-output-tokens-remaining", "10", "anthropic-ratelimit-output-tokens-reset", at(12 * time.Second),
		}, 12 * time.Second},
		{"no remaining sent: the soonest reset", []string{
			"anthropic-ratelimit-tokens-reset", at(20 * time.Second), "anthropic-ratelimit-requests-reset", at(50 * time.Second),
		}, 20 * time.Second},
		{"requests exhausted", []string{
			"anthropic-ratelimit-requests-remaining", "0", "anthropic-ratelimit-requests-reset", at(50 * time.Second),
			"anthropic-ratelimit-tokens-remaining", "100", "anthropic-ratelimit-tokens-reset", at(3 * time.Second),
		}, 50 * time.Second},
		{"malformed reset ignored", []string{
			"anthropic-ratelimit-requests-remaining", "0", "anthropic-ratelimit-requests-reset", "soon",
			"anthropic-ratelimit-tokens-reset", at(25 * time.Second),
		}, 25 * time.Second},
		{"past reset ignored", []string{
			"anthropic-ratelimit-requests-remaining", "0", "anthropic-ratelimit-requests-reset", at(-time.Minute),
		}, 0},
		{"malformed remaining: not exhausted", []string{
			"anthropic-ratelimit-requests-remaining", "none", "anthropic-ratelimit-requests-reset", at(50 * time.Second),
			"anthropic-ratelimit-tokens-remaining", "5", "anthropic-ratelimit-tokens-reset", at(10 * time.Second),
		}, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseRateLimit(hdr(tc.kv...), t0).ResetAt()
			var want time.Time
			if tc.want != 0 {
				want = t0.Add(tc.want)
			}
			if !got.Equal(want) {
				t.Fatalf("ResetAt = %v, want %v", got, want)
			}
		})
	}
	// A 429 with them rests the account until that reset, not the 30 s cooldown.
	var s LimitState
	p := newLimitPolicy(config.Default().RateLimit)
	s.Apply(p, classify(answer{status: 429, header: hdr(recorded...)}, t0), t0)
	if !s.Until.Equal(t0.Add(45*time.Second)) || s.Cooldown != 0 {
		t.Fatalf("429 rests until %v (cooldown %v), want the tokens reset", s.Until.Sub(t0), s.Cooldown)
	}
}

func TestLimitStateApply(t *testing.T) {
	p := newLimitPolicy(config.Default().RateLimit)
	t.Run("hard status quarantines until reset", func(t *testing.T) {
		var s LimitState
		for _, st := range []string{"rejected", "rate_limited", "blocked", "queueing_hard", "payment_required"} {
			s = LimitState{}
			reset := t0.Add(time.Hour)
			h := hdr("anthropic-ratelimit-unified-status", st,
				"anthropic-ratelimit-unified-reset", strconv.FormatInt(reset.Unix(), 10))
			if !s.Apply(p, classify(answer{status: 200, header: h}, t0), t0) || !s.Until.Equal(reset) {
				t.Fatalf("%s: until %v", st, s.Until)
			}
		}
	})
	t.Run("429 with retry-after", func(t *testing.T) {
		var s LimitState
		if !s.Apply(p, classify(answer{status: 429, header: hdr("retry-after", "42")}, t0), t0) || !s.Until.Equal(t0.Add(42*time.Second)) {
			t.Fatalf("until %v", s.Until)
		}
	})
	t.Run("429 without reset doubles the cooldown to the cap, a good response resets it", func(t *testing.T) {
		var s LimitState
		now := t0
		allowed := hdr("anthropic-ratelimit-unified-status", "allowed")
		want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute}
		for i, w := range want {
			s.Apply(p, classify(answer{status: 429, header: allowed}, now), now)
			if s.Cooldown != w || !s.Until.Equal(now.Add(w)) {
				t.Fatalf("step %d: cooldown %v until %v", i, s.Cooldown, s.Until.Sub(now))
			}
			now = s.Until
		}
		if s.Apply(p, classify(answer{status: 200}, now), now) || s.Cooldown != 0 {
			t.Fatalf("good response did not reset: %+v", s)
		}
		s.Apply(p, classify(answer{status: 429, header: allowed}, now), now)
		if s.Cooldown != 30*time.Second {
			t.Fatalf("after reset: %v", s.Cooldown)
		}
	})
	t.Run("soft is recorded, not blocking", func(t *testing.T) {
		var s LimitState
		h := hdr("anthropic-ratelimit-unified-status", "allowed_warning",
			"anthropic-ratelimit-unified-5h-utilization", "0.91")
		if s.Apply(p, classify(answer{status: 200, header: h}, t0), t0) || s.Status != "allowed_warning" || s.Util5h != 0.91 {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("429 without any rate-limit header never rests", func(t *testing.T) {
		var s LimitState
		for range 3 {
			if s.Apply(p, classify(answer{status: 429, header: hdr("content-type", "application/json")}, t0), t0) || s.Cooldown != 0 || !s.Until.IsZero() {
				t.Fatalf("%+v", s)
			}
		}
	})
	t.Run("529 never rests", func(t *testing.T) {
		var s LimitState
		if s.Apply(p, classify(answer{status: 529}, t0), t0) || !s.Until.IsZero() || s.Cooldown != 0 {
			t.Fatalf("%+v", s)
		}
	})
	t.Run("overload never shortens a quarantine", func(t *testing.T) {
		var s LimitState
		s.Apply(p, classify(answer{status: 429, header: hdr("retry-after", "3600")}, t0), t0)
		s.Apply(p, classify(answer{status: 529}, t0), t0)
		if !s.Until.Equal(t0.Add(time.Hour)) {
			t.Fatalf("%v", s.Until)
		}
	})
}

func FuzzParseRateLimit(f *testing.F) {
	f.Add("rejected", "1764244800", "0", "0.5", "30", "2026-11-27T13:00:00Z")
	f.Add("allowed_warning", "2026-11-27T13:00:00Z", "12", "85%", "Fri, 27 Nov 2026 13:00:00 GMT", "")
	f.Add("", "1764244800123", "-1", "NaN", "1e400", "garbage")
	f.Add("queueing_hard", "+Inf", "x", "1e309", "-0", "0x1p-2")
	f.Fuzz(func(t *testing.T, status, reset, remaining, util, retryAfter, xreset string) {
		h := hdr(
			"anthropic-ratelimit-unified-status", status,
			"anthropic-ratelimit-unified-reset", reset,
			"anthropic-ratelimit-unified-remaining", remaining,
			"anthropic-ratelimit-unified-5h-status", status,
			"anthropic-ratelimit-unified-5h-reset", reset,
			"anthropic-ratelimit-unified-5h-utilization", util,
			"anthropic-ratelimit-unified-7d-utilization", util,
			"retry-after", retryAfter,
			"x-ratelimit-reset", xreset,
		)
		rl := ParseRateLimit(h, t0)
		if r := rl.ResetAt(); !r.IsZero() && (!r.After(t0) || r.Sub(t0) > maxResetAhead) {
			t.Fatalf("reset out of range: %v", r)
		}
		if rl.Util5h != -1 && (rl.Util5h < 0 || rl.Util5h > 10 || rl.Util5h != rl.Util5h) {
			t.Fatalf("util out of range: %v", rl.Util5h)
		}
		var s LimitState
		for _, st := range []int{200, 429, 529, 500, 403} {
			s.Apply(newLimitPolicy(config.Default().RateLimit), classify(answer{status: st, header: h}, t0), t0)
			if s.Until.Sub(t0) > maxResetAhead {
				t.Fatalf("blocked too long: %v", s.Until)
			}
		}
	})
}

// TestLimitSavedReason: a block keeps its reason in the saved row, so
// that `accounts list` (acctstate.Of) names its window and a restarted
// daemon (limitFromStore) holds the same block.
func TestLimitSavedReason(t *testing.T) {
	until := t0.Add(time.Minute)
	for _, tc := range []struct {
		name       string
		s          LimitState
		rl, window string // saved rl_status, accounts list's window
		reason     string // the reason after a restart
	}{
		{"uncured 401", LimitState{Until: until, Reason: LimitUnauthorized, Status: "allowed"}, "unauthorized", "unauthorized", LimitUnauthorized},
		{"extra usage refused", LimitState{Until: until, Reason: WindowExtraUsage, Status: "rejected"}, "extra_usage", "extra_usage", WindowExtraUsage},
		{"cooldown", LimitState{Until: until, Reason: LimitCooldown, Cooldown: 30 * time.Second}, "cooldown", "cooldown", LimitCooldown},
		{"5h limit", LimitState{Until: until, Reason: "rejected", Status: "rejected", Claim: "five_hour"}, "5h rejected", "5h", "5h rejected"},
		{"7d window hard", LimitState{Until: until, Reason: "7d rejected", Status: "allowed"}, "7d rejected", "7d", "7d rejected"},
		{"hard, no claim", LimitState{Until: until, Reason: "rejected", Status: "rejected"}, "rejected", "rejected", "rejected"},
		{"not blocked", LimitState{Status: "allowed_warning"}, "allowed_warning", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := limitToStore(tc.s)
			if rs.RLStatus != tc.rl {
				t.Fatalf("rl_status %q, want %q", rs.RLStatus, tc.rl)
			}
			row := store.Account{RateLimitedUntil: rs.RateLimitedUntil, RLStatus: rs.RLStatus, CooldownMS: rs.CooldownMS}
			st := acctstate.Of(row, t0)
			if tc.window != "" && (st.Word != acctstate.Limited || st.Window != tc.window || !st.Until.Equal(until)) {
				t.Fatalf("accounts list: %s, want limited (%s) until %v", st, tc.window, until)
			}
			back := limitFromStore(row)
			if back.Reason != tc.reason || !back.Until.Equal(tc.s.Until) {
				t.Fatalf("after a restart: reason %q until %v, want %q until %v", back.Reason, back.Until, tc.reason, tc.s.Until)
			}
			if tc.window != "" && back.state(t0).Window != tc.window {
				t.Fatalf("after a restart the daemon names window %q, want %q", back.state(t0).Window, tc.window)
			}
		})
	}
}
