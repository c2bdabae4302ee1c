package proxy

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestClassify pins how every upstream answer the proxy tells apart is
// read: what the request does next (Class, Retry), what the account's limit
// state learns (Learn, Outcome, Limited, Until, Window) and the failover
// reason the metrics count. The header sets are the ones Anthropic sends
// (the unified family on subscription accounts, retry-after and the
// anthropic-ratelimit-requests-* family on API keys). The routing issue
// changes rows of this table on purpose; any other change is a bug.
func TestClassify(t *testing.T) {
	now := t0
	reset := now.Add(3 * time.Hour).Truncate(time.Second)
	reset5h := now.Add(2 * time.Hour).Truncate(time.Second)
	reset7d := now.Add(50 * time.Hour).Truncate(time.Second)
	unix := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	unified := func(status string) []string {
		return []string{
			hdrUnifiedStatus, status, hdrUnifiedReset, unix(reset),
			hdr5hStatus, "allowed", hdr5hReset, unix(reset5h), hdr5hUtil, "0.4",
			hdr7dStatus, "allowed", hdr7dReset, unix(reset7d), hdr7dUtil, "0.2",
		}
	}
	with := func(base []string, kv ...string) []string { return append(append([]string(nil), base...), kv...) }
	apiKeyLimits := []string{
		"anthropic-ratelimit-requests-limit", "50",
		"anthropic-ratelimit-requests-remaining", "0",
		"anthropic-ratelimit-requests-reset", now.Add(20 * time.Second).UTC().Format(time.RFC3339),
		"anthropic-ratelimit-tokens-limit", "40000",
		"anthropic-ratelimit-tokens-remaining", "0",
	}
	connRefused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

	type want struct {
		class   Class
		retry   bool
		learn   bool
		outcome Outcome
		limited bool
		until   time.Time
		window  string
		reason  string
		family  string
		overage time.Time
		keyRef  bool
	}
	ok := want{class: ClassOK, learn: true, outcome: OutcomeOK}
	request := want{class: ClassRequest, learn: true, outcome: OutcomeOther}
	for _, tc := range []struct {
		name string
		ans  answer
		hdr  []string
		want want
	}{
		// Answers the client gets, the account unharmed.
		{name: "200 no headers", ans: answer{status: 200}, want: ok},
		{name: "200 allowed", ans: answer{status: 200}, hdr: unified("allowed"), want: ok},
		{name: "200 allowed_warning", ans: answer{status: 200}, hdr: unified("allowed_warning"), want: ok},
		{name: "200 on an oauth account that could refresh", ans: answer{status: 200, canRefresh: true}, want: ok},
		{name: "304", ans: answer{status: 304}, want: ok},
		{name: "101 served, nothing learnt about limits", ans: answer{status: 101},
			want: want{class: ClassOK, learn: true, outcome: OutcomeOther}},
		// A hard unified status on an answer the client gets: served,
		// and the account is limited for the next request.
		{name: "200 with unified rejected", ans: answer{status: 200}, hdr: unified("rejected"),
			want: want{class: ClassOK, learn: true, outcome: OutcomeOK, limited: true, until: reset, window: "rejected"}},
		{name: "200 with 7d rejected", ans: answer{status: 200},
			hdr:  with(unified("allowed"), hdr7dStatus, "rejected"),
			want: want{class: ClassOK, learn: true, outcome: OutcomeOK, limited: true, until: reset7d, window: "7d rejected"}},

		// Request-scoped: passed through untouched, no failover.
		{name: "400 invalid request", ans: answer{status: 400}, hdr: unified("allowed"), want: request},
		{name: "400 without a message", ans: answer{status: 400}, want: request},
		{name: "403 permission_error of the request", ans: answer{status: 403, message: "Your API key does not have permission to use the specified resource."},
			hdr: unified("allowed"), want: request},
		{name: "400 invalid request with a message", ans: answer{status: 400, message: "messages: Field required"}, hdr: unified("allowed"), want: request},

		// Account-specific refusals: quarantine, fail over.
		{name: "403 oauth not allowed for this organization", ans: answer{status: 403,
			message: "OAuth authentication is currently not allowed for this organization."}, hdr: unified("allowed"),
			want: want{class: ClassQuarantine, retry: true, learn: true, outcome: OutcomeOther, reason: "account_refused"}},
		{name: "403 organization has been disabled", ans: answer{status: 403, message: "This organization has been disabled."},
			want: want{class: ClassQuarantine, retry: true, learn: true, outcome: OutcomeOther, reason: "account_refused"}},
		{name: "400 credit balance too low", ans: answer{status: 400,
			message: "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."},
			want: want{class: ClassQuarantine, retry: true, learn: true, outcome: OutcomeOther, reason: "account_refused"}},
		{name: "429 naming a disabled organization is a limit, not a quarantine", ans: answer{status: 429, message: "This organization has been disabled."},
			hdr:  []string{"retry-after", "30"},
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true, until: now.Add(30 * time.Second), window: "rate_limited", reason: "rate_limited"}},

		// Long context refused: request-scoped, never rests the account.
		{name: "400 long context beta not available", ans: answer{status: 400,
			message: "The long context beta is not yet available for this subscription."}, hdr: unified("allowed"),
			want: want{class: ClassScoped, retry: true, learn: true, outcome: OutcomeOther, reason: "rate_limited"}},
		{name: "429 extra usage required for long context (bare)", ans: answer{status: 429,
			message: "Extra usage is required for long context requests."},
			want: want{class: ClassScoped, retry: true, learn: true, outcome: OutcomeOther, reason: "rate_limited"}},
		{name: "429 long context with unified headers", ans: answer{status: 429,
			message: "Extra usage is required for long context requests."}, hdr: unified("allowed"),
			want: want{class: ClassScoped, retry: true, learn: true, outcome: OutcomeOther, reason: "rate_limited"}},

		// Extra usage refused: limited until the unified reset, else a cooldown.
		{name: "400 out of extra usage, unified rejected", ans: answer{status: 400,
			message: "You're out of extra usage. Add more at claude.ai/settings/usage and keep going."}, hdr: unified("rejected"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true, until: reset,
				window: "extra_usage", reason: "rate_limited"}},
		{name: "400 out of extra usage, unified allowed: its reset", ans: answer{status: 400,
			message: "You're out of extra usage."}, hdr: unified("allowed"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true, until: reset,
				window: "extra_usage", reason: "rate_limited"}},
		{name: "429 out of extra usage, no header: a cooldown", ans: answer{status: 429, message: "You're out of Extra Usage."},
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				window: "extra_usage", reason: "rate_limited"}},
		{name: "404", ans: answer{status: 404}, want: request},
		{name: "413", ans: answer{status: 413}, want: request},

		// 429: limits the account when it carries any rate-limit header.
		{name: "429 retry-after", ans: answer{status: 429}, hdr: []string{"retry-after", "120"},
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				until: now.Add(120 * time.Second), window: "rate_limited", reason: "rate_limited"}},
		// A 429 with no rate-limit header and no retry-after is about the
		// request: the account never rests; one more try elsewhere.
		{name: "429 without any rate-limit header: request-scoped", ans: answer{status: 429},
			want: want{class: ClassScoped, retry: true, learn: true, outcome: OutcomeOther, reason: "rate_limited"}},
		{name: "429 without any rate-limit header, other headers sent", ans: answer{status: 429},
			hdr:  []string{"content-type", "application/json", "request-id", "req_1", "x-should-retry", "false"},
			want: want{class: ClassScoped, retry: true, learn: true, outcome: OutcomeOther, reason: "rate_limited"}},
		{name: "429 with only a retry-after is not request-scoped", ans: answer{status: 429}, hdr: []string{"retry-after", "1"},
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				until: now.Add(time.Second), window: "rate_limited", reason: "rate_limited"}},
		{name: "429 with unified allowed: its reset is the window's end, not the limit's", ans: answer{status: 429},
			hdr: unified("allowed"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				window: "rate_limited", reason: "rate_limited"}},
		{name: "429 with unified rejected", ans: answer{status: 429}, hdr: unified("rejected"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				until: reset, window: "rejected", reason: "rate_limited"}},
		{name: "429 with 5h rejected", ans: answer{status: 429}, hdr: with(unified("allowed"), hdr5hStatus, "rejected"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				until: reset5h, window: "5h rejected", reason: "rate_limited"}},
		{name: "429 with x-ratelimit-reset", ans: answer{status: 429}, hdr: []string{"x-ratelimit-reset", unix(reset5h)},
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				until: reset5h, window: "rate_limited", reason: "rate_limited"}},
		{name: "429 with api-key limit headers only (until the exhausted family's reset)", ans: answer{status: 429}, hdr: apiKeyLimits,
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				until: now.Add(20 * time.Second), window: "rate_limited", reason: "rate_limited"}},
		{name: "429 with api-key limits and retry-after (retry-after wins)", ans: answer{status: 429},
			hdr: with(apiKeyLimits, "retry-after", "7"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				until: now.Add(7 * time.Second), window: "rate_limited", reason: "rate_limited"}},
		{name: "429 with api-key limit headers, no reset (a cooldown)", ans: answer{status: 429},
			hdr: []string{"anthropic-ratelimit-requests-limit", "50", "anthropic-ratelimit-requests-remaining", "0"},
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true,
				window: "rate_limited", reason: "rate_limited"}},

		// A hard unified status on an error answer limits and fails over.
		{name: "403 payment_required", ans: answer{status: 403}, hdr: unified("payment_required"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeOther, limited: true,
				until: reset, window: "payment_required", reason: "rate_limited"}},
		{name: "400 with unified rejected", ans: answer{status: 400}, hdr: unified("rejected"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeOther, limited: true,
				until: reset, window: "rejected", reason: "rate_limited"}},
		{name: "500 with unified rejected", ans: answer{status: 500}, hdr: unified("rejected"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeOther, limited: true,
				until: reset, window: "rejected", reason: "rate_limited"}},

		// Model-scoped weekly limits: only that family, until the reset.
		{name: "429 seven_day_opus", ans: answer{status: 429}, hdr: with(unified("rejected"), hdrUnifiedClaim, "seven_day_opus"),
			want: want{class: ClassModelLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true, until: reset,
				window: "seven_day_opus", family: "opus", reason: "rate_limited"}},
		{name: "429 seven_day_sonnet", ans: answer{status: 429}, hdr: with(unified("rejected"), hdrUnifiedClaim, "seven_day_sonnet"),
			want: want{class: ClassModelLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true, until: reset,
				window: "seven_day_sonnet", family: "sonnet", reason: "rate_limited"}},
		{name: "429 seven_day_opus with 7d rejected too: the whole account", ans: answer{status: 429},
			hdr: with(unified("rejected"), hdrUnifiedClaim, "seven_day_opus", hdr7dStatus, "rejected"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true, until: reset,
				window: "rejected", reason: "rate_limited"}},
		{name: "200 with seven_day_opus rejected: served, the family limited for the next", ans: answer{status: 200},
			hdr:  with(unified("rejected"), hdrUnifiedClaim, "seven_day_opus"),
			want: want{class: ClassOK, learn: true, outcome: OutcomeOK, limited: true, until: reset, window: "seven_day_opus", family: "opus"}},
		{name: "429 five_hour claim: the whole account", ans: answer{status: 429}, hdr: with(unified("rejected"), hdrUnifiedClaim, "five_hour"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true, until: reset,
				window: "rejected", reason: "rate_limited"}},

		// Overage (extra usage) served: ok, not limited, marked.
		{name: "200 rejected, overage allowed", ans: answer{status: 200},
			hdr:  with(unified("rejected"), hdrOverageStatus, "allowed", hdrOverageReset, unix(reset7d)),
			want: want{class: ClassOK, learn: true, outcome: OutcomeOK, overage: reset}},
		{name: "200 rejected, overage allowed_warning", ans: answer{status: 200},
			hdr:  with(unified("rejected"), hdrOverageStatus, "allowed_warning"),
			want: want{class: ClassOK, learn: true, outcome: OutcomeOK, overage: reset}},
		{name: "200 rejected, overage rejected: limited for the next", ans: answer{status: 200},
			hdr:  with(unified("rejected"), hdrOverageStatus, "rejected", "anthropic-ratelimit-unified-overage-disabled-reason", "org_level_disabled"),
			want: want{class: ClassOK, learn: true, outcome: OutcomeOK, limited: true, until: reset, window: "rejected"}},
		{name: "429 rejected, overage rejected with a reason: a plain limit", ans: answer{status: 429},
			hdr: with(unified("rejected"), hdrOverageStatus, "rejected", "anthropic-ratelimit-unified-overage-disabled-reason", "out_of_credits"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeLimited, limited: true, until: reset,
				window: "rejected", reason: "rate_limited"}},

		// 401.
		{name: "401 an oauth refresh may cure", ans: answer{status: 401, canRefresh: true},
			want: want{class: ClassRefresh, outcome: OutcomeOther}},
		{name: "401 an oauth refresh may cure, hard status too", ans: answer{status: 401, canRefresh: true}, hdr: unified("rejected"),
			want: want{class: ClassRefresh, outcome: OutcomeOther}},
		{name: "401 and the refresh gave no token", ans: answer{status: 401, refreshFailed: true},
			want: want{class: ClassAccount, retry: true, outcome: OutcomeOther, reason: "unauthorized"}},
		{name: "401 and the refresh gave no token, hard status ignored", ans: answer{status: 401, refreshFailed: true}, hdr: unified("rejected"),
			want: want{class: ClassAccount, retry: true, outcome: OutcomeOther, reason: "unauthorized"}},
		{name: "401 again after a refresh", ans: answer{status: 401},
			want: want{class: ClassAccount, retry: true, learn: true, outcome: OutcomeOther, reason: "unauthorized"}},
		{name: "401 on an api key: the key is refused", ans: answer{status: 401, apiKey: true, message: "invalid x-api-key"},
			want: want{class: ClassAccount, retry: true, learn: true, outcome: OutcomeOther, reason: "unauthorized", keyRef: true}},
		{name: "401 with a hard status, no refresh left", ans: answer{status: 401}, hdr: unified("rejected"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeOther, limited: true,
				until: reset, window: "rejected", reason: "rate_limited"}},

		// Transient: 529, other 5xx, no answer.
		{name: "529", ans: answer{status: 529}, hdr: unified("allowed"),
			want: want{class: ClassTransient, retry: true, learn: true, outcome: OutcomeOverloaded, reason: "overloaded"}},
		{name: "529 with a hard status", ans: answer{status: 529}, hdr: unified("rejected"),
			want: want{class: ClassLimited, retry: true, learn: true, outcome: OutcomeOverloaded, limited: true,
				until: reset, window: "rejected", reason: "rate_limited"}},
		{name: "500", ans: answer{status: 500},
			want: want{class: ClassTransient, retry: true, learn: true, outcome: OutcomeOther, reason: "server_error"}},
		{name: "502", ans: answer{status: 502},
			want: want{class: ClassTransient, retry: true, learn: true, outcome: OutcomeOther, reason: "server_error"}},
		{name: "503 with retry-after does not limit", ans: answer{status: 503}, hdr: []string{"retry-after", "30"},
			want: want{class: ClassTransient, retry: true, learn: true, outcome: OutcomeOther, reason: "server_error"}},
		{name: "connection refused", ans: answer{err: connRefused},
			want: want{class: ClassTransient, retry: true, outcome: OutcomeOther, reason: "connection"}},
		{name: "connection error on an oauth account", ans: answer{err: errors.New("EOF"), canRefresh: true},
			want: want{class: ClassTransient, retry: true, outcome: OutcomeOther, reason: "connection"}},

		// Error events inside an answer the client already has: never
		// retried; the account learns from some.
		{name: "in-stream rate_limit_error", ans: answer{sent: true, event: "rate_limit_error"},
			want: want{class: ClassLimited, learn: true, outcome: OutcomeLimited, limited: true, window: "rate_limited"}},
		{name: "in-stream overloaded_error", ans: answer{sent: true, event: "overloaded_error"},
			want: want{class: ClassTransient, learn: true, outcome: OutcomeOverloaded}},
		{name: "in-stream api_error", ans: answer{sent: true, event: "api_error"},
			want: want{class: ClassRequest, outcome: OutcomeOther}},
		{name: "in-stream invalid_request_error", ans: answer{sent: true, event: "invalid_request_error"},
			want: want{class: ClassRequest, outcome: OutcomeOther}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans := tc.ans
			if tc.hdr != nil {
				ans.header = hdr(tc.hdr...)
			}
			v := classify(ans, now)
			got := want{class: v.Class, retry: v.Retry, learn: v.Learn, outcome: v.Outcome, limited: v.Limited,
				until: v.Until, window: v.Window, reason: v.Reason, family: v.Family, overage: v.OverageUntil, keyRef: v.KeyRefused}
			if got.until.Equal(tc.want.until) {
				got.until = tc.want.until // same instant, maybe another location
			}
			if got.overage.Equal(tc.want.overage) {
				got.overage = tc.want.overage
			}
			if v.Overage != !tc.want.overage.IsZero() {
				t.Fatalf("overage %v, want %v", v.Overage, tc.want.overage)
			}
			if got != tc.want {
				t.Fatalf("verdict\n got %+v\nwant %+v", got, tc.want)
			}
			if !v.Learn {
				return
			}
			// What the limit state makes of the verdict agrees with it.
			p := LimitPolicy{CooldownInitial: 30 * time.Second, CooldownMax: 5 * time.Minute, OverloadedCooldown: 10 * time.Second}
			var s LimitState
			blocked := s.Apply(p, v, now)
			switch {
			case v.Limited && v.Family != "":
				if blocked || !s.Models[v.Family].Equal(v.Until) {
					t.Fatalf("limit state %+v, verdict family %s until %v", s, v.Family, v.Until)
				}
			case v.Overage:
				if blocked || !s.Overage.Equal(v.OverageUntil) {
					t.Fatalf("limit state %+v, verdict overage until %v", s, v.OverageUntil)
				}
			case v.Limited && !v.Until.IsZero():
				if !blocked || !s.Until.Equal(v.Until) || s.Reason != v.Window {
					t.Fatalf("limit state %+v, verdict until %v window %q", s, v.Until, v.Window)
				}
			case v.Limited:
				// A cooldown; one after a refusal of extra usage keeps
				// that name (the window `accounts list` shows).
				wantReason := "cooldown"
				if v.Window == WindowExtraUsage {
					wantReason = WindowExtraUsage
				}
				if !blocked || !s.Until.Equal(now.Add(p.CooldownInitial)) || s.Reason != wantReason {
					t.Fatalf("limit state %+v, want a cooldown", s)
				}
			default:
				if blocked {
					t.Fatalf("limit state %+v blocks, verdict does not limit", s)
				}
			}
		})
	}
}

// TestFailoverReasonWithoutAnswer: an attempt that got no credential sent
// nothing; the metrics count it as token_refresh.
func TestFailoverReasonWithoutAnswer(t *testing.T) {
	var f *attemptFailure
	if r := f.reason(); r != "token_refresh" {
		t.Fatalf("reason %q", r)
	}
	if r := (&attemptFailure{verdict: classify(answer{status: 502}, t0)}).reason(); r != "server_error" {
		t.Fatalf("reason %q", r)
	}
}
