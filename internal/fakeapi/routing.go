package fakeapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file holds the answers the routing work reads (docs: the routing
// issue's wire notes): model-scoped weekly limits, overage (extra usage)
// served or refused, refusals of the account itself, long-context
// refusals and 401s that no refresh cures. Each is state of an account
// that lasts until cleared, unlike a Fault, which is used up.

// Messages of Anthropic's account-specific refusals (403 permission_error
// and 400 invalid_request_error), for SetAccountRefusal.
const (
	MsgOAuthNotAllowed = "OAuth authentication is currently not allowed for this organization."
	MsgOrgDisabled     = "This organization has been disabled."
	MsgCreditTooLow    = "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."
)

// MsgExtraUsage is the message of a request refused because the
// account's extra usage is spent (SetOverage with OverageRefused*).
const MsgExtraUsage = "You're out of extra usage. Add more at claude.ai/settings/usage and keep going."

// MsgLongContext is the message of a refusal of long context on a plan
// without it (LongContextFault).
const MsgLongContext = "The long context beta is not yet available for this subscription."

// MsgTokenRevoked is the 401 message RefuseAccessTokens answers with.
const MsgTokenRevoked = "OAuth token has been revoked. Please obtain a new token."

// OverageMode is how an account's extra usage answers (SetOverage).
type OverageMode int

const (
	// OverageOff: no overage; the account answers as usual.
	OverageOff OverageMode = iota
	// OverageServed: every message is served (200) on extra usage: unified
	// status rejected (the subscription limit is reached), overage-status
	// allowed, the unified and overage resets.
	OverageServed
	// OverageRefused: every message gets 429 rate_limit_error naming extra
	// usage (MsgExtraUsage), with the unified rejected headers and reset.
	OverageRefused
	// OverageRefused400: the same refusal as a 400 invalid_request_error.
	OverageRefused400
)

// overage is an account's overage answer.
type overage struct {
	mode  OverageMode
	reset time.Time
}

// refusal is an answer an account gives to every API request.
type refusal struct {
	status       int
	typ, message string
}

// SetModelLimit makes the account's /v1/messages requests for a model of
// family ("opus", "sonnet", "haiku": the model id contains it) answer 429
// rate_limit_error with unified status rejected, representative claim
// seven_day_<family>, the unified reset at reset, and the 5h and 7d
// statuses allowed: a weekly limit of that model family only. Requests
// for other models are served as usual.
func (s *Server) SetModelLimit(account, family string, reset time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(account)
	if a.modelLimits == nil {
		a.modelLimits = map[string]time.Time{}
	}
	a.modelLimits[strings.ToLower(family)] = reset
}

// ClearModelLimit lifts the account's limit of family.
func (s *Server) ClearModelLimit(account, family string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[account]; a != nil {
		delete(a.modelLimits, strings.ToLower(family))
	}
}

// SetOverage sets how the account's /v1/messages requests answer on extra
// usage; reset is the unified reset (and overage reset) they name.
// OverageOff clears it.
func (s *Server) SetOverage(account string, mode OverageMode, reset time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accountLocked(account).overage = overage{mode: mode, reset: reset}
}

// SetAccountRefusal makes every authenticated API request of the account
// (any /v1/ path, not the token endpoint) answer status with an
// Anthropic-shaped error of type typ and message, e.g. 403
// permission_error MsgOAuthNotAllowed. The answer carries no rate-limit
// header. ClearAccountRefusal lifts it.
func (s *Server) SetAccountRefusal(account string, status int, typ, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accountLocked(account).refusal = &refusal{status: status, typ: typ, message: message}
}

// ClearAccountRefusal lifts SetAccountRefusal.
func (s *Server) ClearAccountRefusal(account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[account]; a != nil {
		a.refusal = nil
	}
}

// RefuseAccessTokens makes every access token of the account, those
// issued already and those issued later, answer 401 authentication_error
// (MsgTokenRevoked), while refreshes keep succeeding: a 401 that no
// refresh cures. AcceptAccessTokens undoes it.
func (s *Server) RefuseAccessTokens(account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accountLocked(account).refuseAccess = true
}

// AcceptAccessTokens undoes RefuseAccessTokens.
func (s *Server) AcceptAccessTokens(account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[account]; a != nil {
		a.refuseAccess = false
	}
}

// RevokeAPIKeys makes every API key of the account answer 401
// authentication_error "invalid x-api-key" (the request is still
// recorded as the account's).
func (s *Server) RevokeAPIKeys(account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accountLocked(account).keysRevoked = true
}

// NewSetupToken issues a long-lived access token for the account, as
// `claude setup-token` makes one: valid for validFor (a year when zero),
// never refreshed, without a refresh token.
func (s *Server) NewSetupToken(account string, validFor time.Duration) string {
	if validFor <= 0 {
		validFor = 365 * 24 * time.Hour
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(account)
	tok := "sk-ant-oat01-" + randomString(86) + "AA"
	s.accessTokens[tok] = &accessToken{account: a.name, expires: s.nowLocked().Add(validFor)}
	s.allTokens = append(s.allTokens, tok)
	return tok
}

// LongContextFault is a Fault that refuses the account's next message
// ("" = any account's) as a plan without long context: status 400
// invalid_request_error or 429 rate_limit_error, message MsgLongContext,
// no rate-limit header. Set Count for more than one request.
func LongContextFault(account string, status int) Fault {
	typ := "invalid_request_error"
	if status == http.StatusTooManyRequests {
		typ = "rate_limit_error"
	}
	return Fault{Account: account, Path: MessagesPath, Kind: FaultStatus, Status: status,
		Bare: true, Type: typ, Message: MsgLongContext}
}

// stateAnswer is the answer an account's lasting state gives a request
// (refusal, model limit, overage refused), or nil when the request is
// answered as usual. headers are what the answer carries; overage served
// is applied to them by servedHeaders instead.
type stateAnswer struct {
	status       int
	typ, message string
	headers      map[string]string
}

// stateAnswerLocked decides the answer of the account's lasting state to
// a request of path whose body is body; unified are the account's
// rate-limit headers. s.mu must be held.
func (s *Server) stateAnswerLocked(name, path string, body []byte, unified map[string]string) *stateAnswer {
	a := s.accounts[name]
	if a == nil {
		return nil
	}
	if r := a.refusal; r != nil {
		return &stateAnswer{status: r.status, typ: r.typ, message: r.message, headers: map[string]string{}}
	}
	if path != MessagesPath {
		return nil
	}
	if fam := modelFamily(body); fam != "" {
		if reset, ok := a.modelLimits[fam]; ok {
			return &stateAnswer{status: http.StatusTooManyRequests, typ: "rate_limit_error",
				message: "This request would exceed your account's rate limit. Please try again later.",
				headers: modelLimitHeaders(unified, fam, reset)}
		}
	}
	switch a.overage.mode {
	case OverageRefused:
		return &stateAnswer{status: http.StatusTooManyRequests, typ: "rate_limit_error", message: MsgExtraUsage,
			headers: overageHeaders(unified, a.overage.reset, "rejected")}
	case OverageRefused400:
		return &stateAnswer{status: http.StatusBadRequest, typ: "invalid_request_error", message: MsgExtraUsage,
			headers: overageHeaders(unified, a.overage.reset, "rejected")}
	}
	return nil
}

// servedHeaders applies an account's overage-served state to the headers
// of a request it serves. s.mu must be held.
func (s *Server) servedHeadersLocked(name, path string, unified map[string]string) map[string]string {
	a := s.accounts[name]
	if a == nil || path != MessagesPath || a.overage.mode != OverageServed {
		return unified
	}
	return overageHeaders(unified, a.overage.reset, "allowed")
}

// modelLimitHeaders are the account's headers with a weekly limit of fam
// rejected and the whole-account windows allowed.
func modelLimitHeaders(unified map[string]string, fam string, reset time.Time) map[string]string {
	h := cloneMap(unified)
	h[UnifiedPrefix+"status"] = "rejected"
	h[UnifiedPrefix+"reset"] = strconv.FormatInt(reset.Unix(), 10)
	h[UnifiedPrefix+"representative-claim"] = "seven_day_" + fam
	h[UnifiedPrefix+"5h-status"] = "allowed"
	h[UnifiedPrefix+"7d-status"] = "allowed"
	return h
}

// overageHeaders are the account's headers with the subscription limit
// reached (unified and 5h rejected) and the overage status given.
func overageHeaders(unified map[string]string, reset time.Time, status string) map[string]string {
	r := strconv.FormatInt(reset.Unix(), 10)
	h := cloneMap(unified)
	h[UnifiedPrefix+"status"] = "rejected"
	h[UnifiedPrefix+"reset"] = r
	h[UnifiedPrefix+"representative-claim"] = "five_hour"
	h[UnifiedPrefix+"5h-status"] = "rejected"
	h[UnifiedPrefix+"5h-reset"] = r
	h[UnifiedPrefix+"5h-utilization"] = "1.0"
	h[UnifiedPrefix+"overage-status"] = status
	if status == "allowed" {
		h[UnifiedPrefix+"overage-reset"] = r
	} else {
		h[UnifiedPrefix+"overage-disabled-reason"] = "out_of_credits"
	}
	return h
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+4)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// modelFamily is the family of the model a messages body asks for: opus,
// sonnet or haiku when the model id contains it, else "".
func modelFamily(body []byte) string {
	var req struct {
		Model string `json:"model"`
	}
	if json.Unmarshal(body, &req) != nil {
		return ""
	}
	m := strings.ToLower(req.Model)
	for _, f := range []string{"opus", "sonnet", "haiku"} {
		if strings.Contains(m, f) {
			return f
		}
	}
	return ""
}
