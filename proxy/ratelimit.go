package proxy

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/acctstate"
)

// Rate-limit headers sent by Anthropic. The unified family describes the
// subscription (OAuth) limits; retry-after and x-ratelimit-reset are the
// generic ones.
const (
	hdrUnifiedStatus    = "Anthropic-Ratelimit-Unified-Status"
	hdrUnifiedReset     = "Anthropic-Ratelimit-Unified-Reset"
	hdrUnifiedRemaining = "Anthropic-Ratelimit-Unified-Remaining"
	hdrUnifiedClaim     = "Anthropic-Ratelimit-Unified-Representative-Claim"
	hdr5hStatus         = "Anthropic-Ratelimit-Unified-5h-Status"
	hdr5hReset          = "Anthropic-Ratelimit-Unified-5h-Reset"
	hdr5hUtil           = "Anthropic-Ratelimit-Unified-5h-Utilization"
	hdr7dStatus         = "Anthropic-Ratelimit-Unified-7d-Status"
	hdr7dReset          = "Anthropic-Ratelimit-Unified-7d-Reset"
	hdr7dUtil           = "Anthropic-Ratelimit-Unified-7d-Utilization"
	hdrOverageStatus    = "Anthropic-Ratelimit-Unified-Overage-Status"
	hdrOverageReset     = "Anthropic-Ratelimit-Unified-Overage-Reset"
	hdrRetryAfter       = "Retry-After"
	// The API-key families: anthropic-ratelimit-<family>-remaining and
	// -reset (RFC 3339), see apiKeyFamilies.
	hdrAPIKeyPrefix    = "Anthropic-Ratelimit-"
	hdrXRateLimitReset = "X-Ratelimit-Reset"
)

// maxResetAhead bounds how far in the future a reset may lie; anything
// beyond is treated as garbage rather than quarantining an account for years.
const maxResetAhead = 35 * 24 * time.Hour

// RateLimit is what the upstream said about an account's limits in one
// response. Zero times and empty strings mean "not sent"; utilizations are
// -1 when not sent.
type RateLimit struct {
	Status     string    // unified status: allowed, allowed_warning, rejected, ...
	Reset      time.Time // unified reset
	Remaining  int64     // unified remaining, -1 when not sent
	Claim      string    // unified representative claim: five_hour, seven_day, ...
	Status5h   string
	Reset5h    time.Time
	Util5h     float64
	Status7d   string
	Reset7d    time.Time
	Util7d     float64
	RetryAfter time.Time // retry-after resolved against now
	XReset     time.Time // x-ratelimit-reset
	// OverageStatus is the unified overage (extra usage) status: allowed,
	// allowed_warning, rejected; OverageReset its reset.
	OverageStatus string
	OverageReset  time.Time
	// APIReset is when the API-key limits let the account in again: the
	// reset of a family whose remaining is 0, else the soonest reset sent
	// (anthropic-ratelimit-requests-reset, -tokens-reset, ...).
	APIReset time.Time
}

// apiKeyFamilies are the API-key rate-limit families, each sent as
// anthropic-ratelimit-<family>-limit, -remaining and -reset.
var apiKeyFamilies = []string{"requests", "tokens", "input-tokens", "output-tokens"}

// parseAPIReset reads the API-key families' resets: the latest reset of
// an exhausted family (remaining 0), else the soonest reset sent; zero
// when none is (a malformed value counts as not sent).
func parseAPIReset(h http.Header, now time.Time) time.Time {
	var exhausted, soonest time.Time
	for _, f := range apiKeyFamilies {
		reset := parseResetTime(h.Get(hdrAPIKeyPrefix+f+"-reset"), now)
		if reset.IsZero() {
			continue
		}
		if soonest.IsZero() || reset.Before(soonest) {
			soonest = reset
		}
		rem := strings.TrimSpace(h.Get(hdrAPIKeyPrefix + f + "-remaining"))
		if n, err := strconv.ParseInt(rem, 10, 64); err == nil && n == 0 && reset.After(exhausted) {
			exhausted = reset
		}
	}
	if !exhausted.IsZero() {
		return exhausted
	}
	return soonest
}

// ParseRateLimit reads the rate-limit headers of one response. It never
// fails: a malformed value is ignored as if it had not been sent.
func ParseRateLimit(h http.Header, now time.Time) RateLimit {
	rl := RateLimit{Remaining: -1, Util5h: -1, Util7d: -1}
	if len(h) == 0 {
		return rl
	}
	rl.Status = normStatus(h.Get(hdrUnifiedStatus))
	rl.Reset = parseResetTime(h.Get(hdrUnifiedReset), now)
	if v := strings.TrimSpace(h.Get(hdrUnifiedRemaining)); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			rl.Remaining = n
		}
	}
	rl.Claim = normStatus(h.Get(hdrUnifiedClaim))
	if len(rl.Claim) > 64 {
		rl.Claim = ""
	}
	rl.Status5h = normStatus(h.Get(hdr5hStatus))
	rl.Reset5h = parseResetTime(h.Get(hdr5hReset), now)
	rl.Util5h = parseUtil(h.Get(hdr5hUtil))
	rl.Status7d = normStatus(h.Get(hdr7dStatus))
	rl.Reset7d = parseResetTime(h.Get(hdr7dReset), now)
	rl.Util7d = parseUtil(h.Get(hdr7dUtil))
	rl.RetryAfter = parseRetryAfter(h.Get(hdrRetryAfter), now)
	rl.XReset = parseResetTime(h.Get(hdrXRateLimitReset), now)
	rl.OverageStatus = normStatus(h.Get(hdrOverageStatus))
	if len(rl.OverageStatus) > 64 {
		rl.OverageStatus = ""
	}
	rl.OverageReset = parseResetTime(h.Get(hdrOverageReset), now)
	rl.APIReset = parseAPIReset(h, now)
	return rl
}

// overageServed reports whether the upstream says it serves on paid extra
// usage (overage status allowed or allowed_warning).
func (rl RateLimit) overageServed() bool {
	return rl.OverageStatus == "allowed" || rl.OverageStatus == "allowed_warning"
}

// modelFamily is the model family a hard unified status is scoped to
// (representative claim seven_day_opus: "opus"), or "" when the limit is
// the whole account's: no family named, or the 5h or 7d window hard too.
func (rl RateLimit) modelFamily() string {
	if !hardStatus(rl.Status) || hardStatus(rl.Status5h) || hardStatus(rl.Status7d) {
		return ""
	}
	return acctstate.ClaimFamily(rl.Claim)
}

// Hard reports whether any status the response carried blocks the account.
func (rl RateLimit) Hard() bool {
	return hardStatus(rl.Status) || hardStatus(rl.Status5h) || hardStatus(rl.Status7d)
}

// ResetAt is when a blocked account may be tried again, or the zero time
// when the response named no reset. The unified reset wins when the unified
// status is hard; then retry-after, then the API-key families' reset
// (APIReset), then x-ratelimit-reset, then the latest reset of a hard
// 5h/7d window. The unified reset of an "allowed" status
// is the window's end, hours away, and says nothing about a plain 429.
func (rl RateLimit) ResetAt() time.Time {
	if hardStatus(rl.Status) && !rl.Reset.IsZero() {
		return rl.Reset
	}
	if !rl.RetryAfter.IsZero() {
		return rl.RetryAfter
	}
	if !rl.APIReset.IsZero() {
		return rl.APIReset
	}
	if !rl.XReset.IsZero() {
		return rl.XReset
	}
	var t time.Time
	if hardStatus(rl.Status5h) && rl.Reset5h.After(t) {
		t = rl.Reset5h
	}
	if hardStatus(rl.Status7d) && rl.Reset7d.After(t) {
		t = rl.Reset7d
	}
	return t
}

// window names the limit a limiting answer hit: the hard unified status,
// else the hard 5h or 7d window ("5h rejected"), else LimitRateLimited.
func (rl RateLimit) window() string {
	switch {
	case hardStatus(rl.Status):
		return rl.Status
	case hardStatus(rl.Status5h):
		return "5h " + rl.Status5h
	case hardStatus(rl.Status7d):
		return "7d " + rl.Status7d
	}
	return LimitRateLimited
}

func normStatus(s string) string {
	return strings.ToLower(strings.TrimSpace(s))
}

func hardStatus(s string) bool {
	switch s {
	case "rejected", "rate_limited", "blocked", "queueing_hard", "payment_required":
		return true
	}
	return false
}

// parseResetTime accepts unix seconds, unix milliseconds, RFC 3339 and HTTP
// dates. Times in the past or absurdly far ahead are dropped.
func parseResetTime(v string, now time.Time) time.Time {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 64 {
		return time.Time{}
	}
	var t time.Time
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		switch {
		case f != f || f <= 0: // NaN or non-positive
			return time.Time{}
		case f >= 1e12 && f < 1e14: // unix ms
			t = time.UnixMilli(int64(f))
		case f >= 1e8 && f < 1e11: // unix seconds
			t = time.Unix(int64(f), int64((f-float64(int64(f)))*1e9))
		default:
			return time.Time{}
		}
	} else if p, err := time.Parse(time.RFC3339, v); err == nil {
		t = p
	} else if p, err := http.ParseTime(v); err == nil {
		t = p
	} else {
		return time.Time{}
	}
	return sane(t, now)
}

// parseRetryAfter accepts delta seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Time {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 64 {
		return time.Time{}
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f != f || f <= 0 || f > maxResetAhead.Seconds() {
			return time.Time{}
		}
		return now.Add(time.Duration(f * float64(time.Second)))
	}
	if t, err := http.ParseTime(v); err == nil {
		return sane(t, now)
	}
	return time.Time{}
}

func sane(t, now time.Time) time.Time {
	if !t.After(now) || t.Sub(now) > maxResetAhead {
		return time.Time{}
	}
	return t
}

// parseUtil reads a utilization, sent as a fraction (0.42) or, by some
// senders, as a percentage (42). The result is a fraction, -1 when absent.
func parseUtil(v string) float64 {
	v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "%"))
	if v == "" {
		return -1
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f != f || f < 0 || f > 1000 {
		return -1
	}
	if f > 1.5 { // a percentage
		f /= 100
	}
	return f
}

// LimitPolicy holds the cooldown lengths ([ratelimit]).
type LimitPolicy struct {
	CooldownInitial    time.Duration // first cooldown after a 429 without reset
	CooldownMax        time.Duration // cap of the doubling cooldown
	OverloadedCooldown time.Duration // no longer used: a 529 or overloaded_error never rests an account
	RecheckInterval    time.Duration // spacing of the probes re-checking a far block or a quarantine
}

// newLimitPolicy is the policy the [ratelimit] settings describe.
func newLimitPolicy(c config.RateLimit) LimitPolicy {
	return LimitPolicy{
		CooldownInitial:    c.CooldownInitial.Std(),
		CooldownMax:        c.CooldownMax.Std(),
		OverloadedCooldown: c.OverloadedCooldown.Std(),
		RecheckInterval:    c.RecheckInterval.Std(),
	}
}

// Why an account rests (LimitState.Reason, AccountEvent.Reason) when the
// upstream named no hard status ("rejected", "5h rejected") to give.
const (
	LimitRateLimited   = "rate_limited"   // a 429 without a hard unified status
	LimitCooldown      = "cooldown"       // a step of the doubling cooldown after a 429 without a reset
	LimitRefreshFailed = "refresh_failed" // the rest after a failing token refresh
	LimitUnauthorized  = "unauthorized"   // the backoff after a 401 no refresh cured
)

// The backoff of an account whose 401 no refresh cures: 1 min doubling to
// 30 min; the unauthorizedLogin-th uncured 401 in a row marks an OAuth
// account needs_login.
const (
	unauthorizedInitial = time.Minute
	unauthorizedMax     = 30 * time.Minute
	unauthorizedLogin   = 3
)

// LimitState is the in-memory rate-limit state of one account.
type LimitState struct {
	Until    time.Time     // the whole account blocked (limit, cooldown or rest) until
	Reason   string        // why blocked: the hard status or one of the Limit* reasons
	Cooldown time.Duration // current step of the doubling cooldown, 0 = none
	Status   string        // last unified status seen
	Reset    time.Time     // last unified reset seen
	Claim    string        // last unified representative claim seen (kept in memory only)
	Util5h   float64
	Util7d   float64
	Reset5h  time.Time
	Reset7d  time.Time
	// Models holds the model-scoped limits: family -> limited until. The
	// account still serves the other families. Copy with clone.
	Models map[string]time.Time
	// Overage: the upstream serves the account on paid extra usage until
	// then (the account is not blocked; see account.overageAvoided).
	Overage time.Time
	// Unauthorized counts the 401s in a row that no refresh cured;
	// UnauthStep is the last step of their backoff.
	Unauthorized int
	UnauthStep   time.Duration
}

// Blocked reports whether the account must not be used at now.
func (s LimitState) Blocked(now time.Time) bool { return now.Before(s.Until) }

// BlockedFor reports whether the account must not be used at now for a
// request of model family fam ("" = no family known): blocked as a whole,
// or that family limited. until is when it may be used again.
func (s LimitState) BlockedFor(now time.Time, fam string) (blocked bool, until time.Time) {
	if s.Blocked(now) {
		return true, s.Until
	}
	if t, ok := s.Models[fam]; ok && fam != "" && now.Before(t) {
		return true, t
	}
	return false, time.Time{}
}

// clone copies s, its model limits included.
func (s LimitState) clone() LimitState {
	s.Models = maps.Clone(s.Models)
	return s
}

// equal reports whether s and o hold the same state.
func (s LimitState) equal(o LimitState) bool {
	return s.Until == o.Until && s.Reason == o.Reason && s.Cooldown == o.Cooldown &&
		s.Status == o.Status && s.Reset == o.Reset && s.Claim == o.Claim &&
		s.Util5h == o.Util5h && s.Util7d == o.Util7d && s.Reset5h == o.Reset5h && s.Reset7d == o.Reset7d &&
		s.Overage == o.Overage && s.Unauthorized == o.Unauthorized && s.UnauthStep == o.UnauthStep &&
		maps.EqualFunc(s.Models, o.Models, time.Time.Equal)
}

// state names the limit state at now in the account state words:
// refresh_blocked, limited (with its window), limited_model (the family
// ending soonest), else ok; the model limits and overage in force ride
// along.
func (s LimitState) state(now time.Time) acctstate.State {
	st := acctstate.State{Word: acctstate.OK}
	for fam, t := range s.Models {
		if t.After(now) {
			if st.Models == nil {
				st.Models = map[string]time.Time{}
			}
			st.Models[fam] = t
		}
	}
	if s.Overage.After(now) {
		st.Overage = s.Overage
	}
	switch {
	case s.Blocked(now) && s.Reason == LimitRefreshBlocked:
		st.Word, st.Until = acctstate.RefreshBlocked, s.Until
	case s.Blocked(now):
		st.Word, st.Until, st.Window = acctstate.Limited, s.Until, windowOf(s.Reason, s.Claim)
	case len(st.Models) > 0:
		st.Word = acctstate.LimitedModel
		for _, fam := range slices.Sorted(maps.Keys(st.Models)) {
			if st.Until.IsZero() || st.Models[fam].Before(st.Until) {
				st.Family, st.Until = fam, st.Models[fam]
			}
		}
	}
	return st
}

// windowOf names the window of a limit reason: 5h or 7d for a hard
// unified status whose claim (or own word) names one, else the reason
// (cooldown, rate_limited, unauthorized, extra_usage, ...).
func windowOf(reason, claim string) string {
	if reason != LimitRateLimited && hardStatus(reason) {
		switch claim {
		case "five_hour":
			return "5h"
		case "seven_day":
			return "7d"
		}
	}
	return acctstate.WindowOf(reason)
}

// Outcome is how an attempt ended, as far as rate limiting cares.
type Outcome int

const (
	OutcomeOK         Outcome = iota // a response that says the account works
	OutcomeLimited                   // a 429 or an in-stream rate_limit_error
	OutcomeOverloaded                // a 529 or an in-stream overloaded_error
	OutcomeOther                     // anything else: no change to the limits
)

// Apply folds one answer's verdict (see classify) into the state and
// reports whether the account is now blocked. A limiting answer quarantines
// until its reset, or, naming none, starts (or doubles) the cooldown; an
// overload changes nothing; a good response ends the cooldown;
// the unified headers are recorded whatever the answer.
func (s *LimitState) Apply(p LimitPolicy, v Verdict, now time.Time) bool {
	rl := v.Limit
	if rl.Status != "" {
		s.Status = rl.Status
	}
	if !rl.Reset.IsZero() {
		s.Reset = rl.Reset
	}
	if rl.Claim != "" {
		s.Claim = rl.Claim
	}
	if rl.Util5h >= 0 {
		s.Util5h = rl.Util5h
	}
	if rl.Util7d >= 0 {
		s.Util7d = rl.Util7d
	}
	if !rl.Reset5h.IsZero() {
		s.Reset5h = rl.Reset5h
	}
	if !rl.Reset7d.IsZero() {
		s.Reset7d = rl.Reset7d
	}
	if v.Overage {
		until := v.OverageUntil
		if until.IsZero() {
			until = now.Add(max(p.CooldownMax, p.CooldownInitial))
		}
		s.Overage = until
	} else if v.Outcome == OutcomeOK && rl.Status != "" && !rl.Hard() {
		s.Overage = time.Time{} // the subscription serves it again
	}
	if v.Outcome == OutcomeOK {
		s.Unauthorized, s.UnauthStep = 0, 0
	}
	switch {
	case v.Limited && v.Family != "":
		until := v.Until
		if until.IsZero() {
			until = now.Add(p.CooldownInitial)
		}
		if until.After(s.Models[v.Family]) {
			if s.Models == nil {
				s.Models = map[string]time.Time{}
			}
			s.Models[v.Family] = until
		}
		s.dropModels(now)
	case v.Limited:
		if !v.Until.IsZero() {
			s.block(v.Until, v.Window)
			return true
		}
		next := p.CooldownInitial
		if s.Cooldown > 0 {
			next = s.Cooldown * 2
		}
		if p.CooldownMax > 0 && next > p.CooldownMax {
			next = p.CooldownMax
		}
		s.Cooldown = next
		reason := LimitCooldown
		if v.Window == WindowExtraUsage {
			reason = v.Window // a refusal of extra usage keeps its name
		}
		s.block(now.Add(next), reason)
		return true
	case v.Outcome == OutcomeOverloaded:
		// A 529 or an overloaded_error is Anthropic-wide load, not this
		// account's: it never rests the account (the request moves on
		// or retries after a backoff instead).
	case v.Outcome == OutcomeOK:
		s.Cooldown = 0
		// A good answer ends a cooldown, and forgets a block that has
		// ended (the recovered event comes from this: see limitChanged).
		if (s.Until.After(now) && s.Reason == LimitCooldown) || (!s.Until.IsZero() && !s.Until.After(now)) {
			s.Until, s.Reason = time.Time{}, ""
		}
	}
	return s.Blocked(now)
}

// dropModels forgets the model limits over at now.
func (s *LimitState) dropModels(now time.Time) {
	for fam, t := range s.Models {
		if !t.After(now) {
			delete(s.Models, fam)
		}
	}
	if len(s.Models) == 0 {
		s.Models = nil
	}
}

// unauthorized counts one more 401 that no refresh cured and rests the
// account for the next backoff step. It reports the count in a row.
func (s *LimitState) unauthorized(now time.Time) int {
	s.Unauthorized++
	switch {
	case s.UnauthStep == 0:
		s.UnauthStep = unauthorizedInitial
	default:
		s.UnauthStep = min(2*s.UnauthStep, unauthorizedMax)
	}
	s.block(now.Add(s.UnauthStep), LimitUnauthorized)
	return s.Unauthorized
}

// block extends the blocked period; it never shortens an existing one.
func (s *LimitState) block(until time.Time, reason string) {
	if until.After(s.Until) {
		s.Until, s.Reason = until, reason
	}
}
