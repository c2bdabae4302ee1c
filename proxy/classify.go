package proxy

import (
	"net/http"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/internal/apierr"
)

// This file is the one place that reads what an upstream answer means:
// for the request (hand it to the client, refresh and resend, or move on
// to another try) and for the account that gave it (works, limited,
// resting). forward.go and stream.go act on the Verdict, the account's
// limit state (LimitState.Apply) acts on it too, and the failover metric
// counts its Reason: none of them reads a status code or a rate-limit
// header to decide.

// Class is what kind of answer the upstream gave, as far as routing cares.
type Class uint8

const (
	// ClassOK: the client gets the answer and the account served it (a
	// status below 400). A hard unified status on it still limits the
	// account (Verdict.Limited) for the next request.
	ClassOK Class = iota
	// ClassRequest: request-scoped. The client gets the answer as is; it
	// says nothing about the account (a 4xx other than the ones below).
	ClassRequest
	// ClassRefresh: a 401 that a forced token refresh may cure (an OAuth
	// account, not refreshed yet in this attempt): refresh once, resend.
	ClassRefresh
	// ClassLimited: the account is limited: a 429, or a hard unified
	// status on an error answer. The request moves on.
	ClassLimited
	// ClassAccount: account-broken: a 401 no refresh cures (or on an API
	// key). The request moves on.
	ClassAccount
	// ClassTransient: a 529, another 5xx, or no answer at all (dial, TLS or
	// read error before the headers). The request moves on; the account
	// does not rest (the load is Anthropic's, not the account's).
	ClassTransient
	// ClassScoped: a 429 without any rate-limit header or retry-after:
	// Anthropic refusing the request itself (e.g. long context on a plan
	// without it), not limiting the account. The account does not rest;
	// the request is tried once more on another account, then the
	// upstream's 429 goes to the client unchanged.
	ClassScoped
)

var classNames = [...]string{"ok", "request", "refresh", "limited", "account", "transient", "scoped"}

func (k Class) String() string {
	if int(k) < len(classNames) {
		return classNames[k]
	}
	return "unknown"
}

// answer is what the upstream gave one attempt, as classify reads it.
type answer struct {
	status int         // 0 when err is set or for an in-stream event
	header http.Header // the response headers (nil for an in-stream event)
	err    error       // no answer: the request failed before any headers
	// canRefresh: a 401 may still be cured by a forced token refresh
	// (an OAuth account whose token was not refreshed for this attempt).
	canRefresh bool
	// refreshFailed: this is the 401 a forced refresh was asked to cure,
	// and no new token came.
	refreshFailed bool
	// sent: bytes already reached the client; event is the type of the
	// error event found in the answer (e.g. overloaded_error).
	sent  bool
	event string
}

// Verdict is what one upstream answer means.
type Verdict struct {
	Class Class
	// Retry: the request moves on to another try (never once bytes
	// reached the client).
	Retry bool
	// Learn: the account's limit state learns from this answer
	// (pool.observe, LimitState.Apply).
	Learn   bool
	Outcome Outcome   // ok ends a cooldown; overloaded is recorded, never rests the account
	Limit   RateLimit // the rate-limit headers the answer carried (recorded)
	// Limited: the answer limits the account (a 429, a hard unified status
	// or an in-stream rate_limit_error), until Until; a zero Until means
	// the answer named no reset and the account cools down instead.
	Limited bool
	Until   time.Time
	Window  string // with Limited: the limit hit (rl.window)
	// Reason names why the request moved on (the Reason* constants, the
	// metrics' failover reason label); empty when it does not.
	Reason string
}

// classify reads one upstream answer.
func classify(ans answer, now time.Time) Verdict {
	v := Verdict{Limit: ParseRateLimit(ans.header, now), Outcome: OutcomeOther}
	switch {
	case ans.sent:
		classifyEvent(&v, ans.event)
		return v
	case ans.err != nil:
		v.Class, v.Retry, v.Reason = ClassTransient, true, ReasonConnection
		return v
	case ans.status == http.StatusUnauthorized && ans.canRefresh:
		// Said to a token about to be replaced: nothing to learn.
		v.Class = ClassRefresh
		return v
	case ans.status == http.StatusUnauthorized && ans.refreshFailed:
		v.Class, v.Retry, v.Reason = ClassAccount, true, ReasonUnauthorized
		return v
	}
	st := ans.status
	v.Learn = true
	if st == http.StatusTooManyRequests && !rateLimitHeaders(ans.header) {
		v.Class, v.Retry, v.Reason = ClassScoped, true, ReasonRateLimited
		return v
	}
	switch {
	case st == http.StatusTooManyRequests:
		v.Outcome = OutcomeLimited
	case st == 529:
		v.Outcome = OutcomeOverloaded
	case st >= 200 && st < 400:
		v.Outcome = OutcomeOK
	}
	hard := v.Limit.Hard()
	if st == http.StatusTooManyRequests || hard {
		v.Limited, v.Until, v.Window = true, v.Limit.ResetAt(), v.Limit.window()
	}
	switch {
	case st < 400:
		v.Class = ClassOK
	case st == http.StatusTooManyRequests || hard:
		v.Class, v.Retry, v.Reason = ClassLimited, true, ReasonRateLimited
	case st == http.StatusUnauthorized:
		v.Class, v.Retry, v.Reason = ClassAccount, true, ReasonUnauthorized
	case st == 529:
		v.Class, v.Retry, v.Reason = ClassTransient, true, ReasonOverloaded
	case st >= 500:
		v.Class, v.Retry, v.Reason = ClassTransient, true, ReasonServerError
	default:
		v.Class = ClassRequest
	}
	return v
}

// rateLimitHeaders reports whether h carries any rate-limit header: the
// anthropic-ratelimit-* families (unified, requests, tokens, ...),
// retry-after or x-ratelimit-reset.
func rateLimitHeaders(h http.Header) bool {
	for k := range h {
		k = http.CanonicalHeaderKey(k)
		if strings.HasPrefix(k, "Anthropic-Ratelimit-") || k == hdrRetryAfter || k == hdrXRateLimitReset {
			return true
		}
	}
	return false
}

// classifyEvent reads an error event inside an answer already under way:
// the client has it, but the account's state still learns.
func classifyEvent(v *Verdict, event string) {
	v.Class = ClassRequest
	switch event {
	case "":
		v.Class = ClassOK
	case apierr.RateLimit:
		v.Class, v.Learn, v.Outcome = ClassLimited, true, OutcomeLimited
		v.Limited, v.Window = true, v.Limit.window()
	case apierr.Overloaded:
		v.Class, v.Learn, v.Outcome = ClassTransient, true, OutcomeOverloaded
	}
}

// verdictOf classifies the answer to one send: a response, or the error
// that stood for one.
func verdictOf(resp *http.Response, err error, canRefresh bool, now time.Time) Verdict {
	if err != nil {
		return classify(answer{err: err}, now)
	}
	return classify(answer{status: resp.StatusCode, header: resp.Header, canRefresh: canRefresh}, now)
}

// reason names why a request left an account, for the Observer: its
// verdict's reason, or token_refresh when no credential could be had and
// nothing was sent.
func (f *attemptFailure) reason() string {
	if f == nil {
		return ReasonTokenRefresh
	}
	return f.verdict.Reason
}
