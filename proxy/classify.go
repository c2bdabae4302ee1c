package proxy

import (
	"encoding/json"
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
	// ClassScoped: a 429 without any rate-limit header or retry-after, or
	// a 400/429 refusing long context: Anthropic refusing the request
	// itself, not limiting the account. The account does not rest; the
	// request is tried once more on another account, then the upstream's
	// answer goes to the client unchanged.
	ClassScoped
	// ClassModelLimited: a model-scoped limit (representative claim
	// seven_day_opus, seven_day_sonnet, ... with the 5h and 7d windows
	// not hard): only that model family (Verdict.Family) is limited on
	// the account, until Verdict.Until. The request moves on; the account
	// keeps serving the other families.
	ClassModelLimited
	// ClassQuarantine: the upstream refused the account itself (a 400 or
	// 403 naming the organization or the credit balance): the account is
	// quarantined with the message (Verdict.Message) as reason and the
	// request moves on. Any other 400/403 is ClassRequest.
	ClassQuarantine
)

var classNames = [...]string{"ok", "request", "refresh", "limited", "account", "transient", "scoped",
	"model_limited", "quarantine"}

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
	// apiKey: the credential sent was an API key (a 401 refuses the key).
	apiKey bool
	// message is the upstream error's message (from an error body, or the
	// in-stream error event), already scrubbed of credentials.
	message string
	// cloud is a cloud account's error code (ThrottlingException,
	// RESOURCE_EXHAUSTED, ...): classifyCloud reads it (cloud.go).
	cloud string
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
	// Family: with Limited, the model family the limit is scoped to
	// (ClassModelLimited, or a 200 carrying a model-scoped rejection);
	// "" for a limit of the whole account.
	Family string
	// Overage: a served answer (ClassOK) the upstream served on paid extra
	// usage (unified rejected, overage allowed), until OverageUntil (zero:
	// not named). The account is not limited by it.
	Overage      bool
	OverageUntil time.Time
	// KeyRefused: with ClassAccount, the refused credential is an API key
	// (no refresh can ever cure it).
	KeyRefused bool
	// Message is the upstream error's message, scrubbed and cut to
	// maxMessage runes (the quarantine reason, log lines).
	Message string
	// Reason names why the request moved on (the Reason* constants, the
	// metrics' failover reason label); empty when it does not.
	Reason string
}

// maxMessage bounds an upstream message kept as a reason.
const maxMessage = 200

// Window of a limit that an extra-usage refusal set.
const WindowExtraUsage = "extra_usage"

// Substrings of an upstream error message (lower-cased) that say what it
// refuses: the request's long context, the account's extra usage, or the
// account itself.
var (
	longContextWords = []string{"long context"}
	extraUsageWords  = []string{"extra usage"}
	accountWords     = []string{"not allowed for this organization", "organization has been disabled",
		"organization is disabled", "account has been disabled", "credit balance is too low"}
)

func mentions(msg string, words []string) bool {
	m := strings.ToLower(msg)
	for _, w := range words {
		if strings.Contains(m, w) {
			return true
		}
	}
	return false
}

// classify reads one upstream answer.
func classify(ans answer, now time.Time) Verdict {
	v := Verdict{Limit: ParseRateLimit(ans.header, now), Outcome: OutcomeOther, Message: cleanMessage(ans.message)}
	switch {
	case ans.sent:
		classifyEvent(&v, ans.event)
		return v
	case ans.err != nil:
		v.Class, v.Retry, v.Reason = ClassTransient, true, ReasonConnection
		return v
	case ans.cloud != "":
		classifyCloud(&v, ans)
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
	if classifyRefusal(&v, st, now) {
		return v
	}
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
	if st < 400 && hard && v.Limit.overageServed() {
		// Served on paid extra usage: the subscription limit is reached,
		// but the upstream keeps serving this account.
		v.Class, v.Overage = ClassOK, true
		v.OverageUntil = v.Limit.Reset
		if v.OverageUntil.IsZero() {
			v.OverageUntil = v.Limit.OverageReset
		}
		return v
	}
	if st == http.StatusTooManyRequests || hard {
		v.Limited, v.Until, v.Window = true, v.Limit.ResetAt(), v.Limit.window()
		if fam := v.Limit.modelFamily(); fam != "" {
			v.Family, v.Window = fam, v.Limit.Claim
		}
	}
	switch {
	case st < 400:
		v.Class = ClassOK
	case v.Family != "":
		v.Class, v.Retry, v.Reason = ClassModelLimited, true, ReasonRateLimited
	case st == http.StatusTooManyRequests || hard:
		v.Class, v.Retry, v.Reason = ClassLimited, true, ReasonRateLimited
	case st == http.StatusUnauthorized:
		v.Class, v.Retry, v.Reason = ClassAccount, true, ReasonUnauthorized
		v.KeyRefused = ans.apiKey
	case st == 529:
		v.Class, v.Retry, v.Reason = ClassTransient, true, ReasonOverloaded
	case st >= 500:
		v.Class, v.Retry, v.Reason = ClassTransient, true, ReasonServerError
	default:
		v.Class = ClassRequest
	}
	return v
}

// classifyRefusal reads a 400, 403 or 429 by its error message: a refusal
// of long context (request-scoped), of extra usage (the account is
// limited), or of the account itself (quarantine). It reports whether the
// message decided the class.
func classifyRefusal(v *Verdict, st int, now time.Time) bool {
	if v.Message == "" || (st != http.StatusBadRequest && st != http.StatusForbidden && st != http.StatusTooManyRequests) {
		return false
	}
	switch {
	case st != http.StatusForbidden && mentions(v.Message, longContextWords):
		v.Class, v.Retry, v.Reason = ClassScoped, true, ReasonRateLimited
	case st != http.StatusForbidden && mentions(v.Message, extraUsageWords):
		v.Class, v.Retry, v.Reason, v.Outcome = ClassLimited, true, ReasonRateLimited, OutcomeLimited
		v.Limited, v.Window = true, WindowExtraUsage
		// Until the unified reset if one was sent, else a cooldown.
		if v.Until = v.Limit.ResetAt(); v.Until.IsZero() {
			v.Until = v.Limit.Reset
		}
	case st != http.StatusTooManyRequests && mentions(v.Message, accountWords):
		v.Class, v.Retry, v.Reason = ClassQuarantine, true, ReasonAccountRefused
	default:
		return false
	}
	return true
}

// cleanMessage makes an upstream message fit for a reason or a log line:
// one line of printable characters, at most maxMessage runes. (Credentials
// are scrubbed by the caller, which knows them.)
func cleanMessage(msg string) string {
	if msg == "" {
		return ""
	}
	var b strings.Builder
	n := 0
	for _, r := range strings.TrimSpace(msg) {
		if n == maxMessage {
			break
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = ' '
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// errorMessage reads an Anthropic error body: {"type":"error","error":
// {"type":..., "message":...}}. Anything else gives "".
func errorMessage(body []byte) (typ, msg string) {
	var e struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	return e.Error.Type, e.Error.Message
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

// reason names why a request left an account, for the Observer: its
// verdict's reason, or token_refresh when no credential could be had and
// nothing was sent.
func (f *attemptFailure) reason() string {
	if f == nil {
		return ReasonTokenRefresh
	}
	return f.verdict.Reason
}
