package acctstate_test

import (
	"testing"
	"time"

	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

func TestOf(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	later := store.ToMS(now.Add(time.Hour))
	earlier := store.ToMS(now.Add(-time.Hour))
	opus := acctstate.ModelLimits{"opus": later}.String()
	for _, tc := range []struct {
		name string
		row  store.Account
		want string
	}{
		{"fresh", store.Account{Status: store.StatusOK}, "ok"},
		{"empty status", store.Account{}, "ok"},
		{"paused", store.Account{Paused: true}, "paused"},
		{"needs login wins over paused", store.Account{Paused: true, Status: store.StatusNeedsLogin, StatusReason: "invalid_grant"}, "needs_login: invalid_grant"},
		{"key refused", store.Account{Status: store.StatusKeyRefused}, "key_refused"},
		{"quarantined", store.Account{Status: store.StatusQuarantined, StatusReason: "organization disabled"}, "quarantined: organization disabled"},
		{"limited 7d", store.Account{RateLimitedUntil: later, RLStatus: "7d rejected"}, "limited (7d) until 2026-12-02T13:00:00Z"},
		{"limited unified", store.Account{RateLimitedUntil: later, RLStatus: "rejected"}, "limited (rejected) until 2026-12-02T13:00:00Z"},
		{"limit over", store.Account{RateLimitedUntil: earlier, RLStatus: "rejected"}, "ok"},
		{"model limit", store.Account{ModelLimits: opus}, "limited_model (opus) until 2026-12-02T13:00:00Z"},
		{"model limit over", store.Account{ModelLimits: acctstate.ModelLimits{"opus": earlier}.String()}, "ok"},
		{"whole account wins over model", store.Account{ModelLimits: opus, RateLimitedUntil: later, RLStatus: "5h rejected"}, "limited (5h) until 2026-12-02T13:00:00Z"},
		{"garbage model limits", store.Account{ModelLimits: "{not json"}, "ok"},
	} {
		if got := acctstate.Of(tc.row, now).String(); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestFamilies(t *testing.T) {
	for model, want := range map[string]string{
		"claude-opus-4-5-20251101": "opus", "claude-sonnet-4-5": "sonnet", "claude-3-5-haiku-latest": "haiku",
		"Claude-OPUS-4": "opus", "gpt-4": "", "": "",
	} {
		if got := acctstate.Family(model); got != want {
			t.Errorf("Family(%q) = %q, want %q", model, got, want)
		}
	}
	for claim, want := range map[string]string{
		"seven_day_opus": "opus", "seven_day_sonnet": "sonnet", "five_hour": "", "seven_day": "", "": "",
	} {
		if got := acctstate.ClaimFamily(claim); got != want {
			t.Errorf("ClaimFamily(%q) = %q, want %q", claim, got, want)
		}
	}
}
