package fakeapi

import (
	"net/http"
	"strconv"
	"time"
)

// Budgets: an account may be given a budget of messages per window, which
// the fake enforces as Anthropic enforces a plan's 5-hour window. Each
// message served costs one; every answer of the account carries its
// 5h utilization (used/size) and the window's reset; the message that
// would go past the budget gets a 429 with the unified status rejected
// until the window resets, when the count starts again.

// budget is one account's budget.
type budget struct {
	size   int
	window time.Duration
	used   int
	reset  time.Time // the current window's end; zero until the first message
}

// SetBudget gives account a budget of size messages per window (size 0
// removes it). The window starts with the account's next message.
func (s *Server) SetBudget(account string, size int, window time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accountLocked(account)
	if s.budgets == nil {
		s.budgets = map[string]*budget{}
	}
	if size <= 0 {
		delete(s.budgets, account)
		return
	}
	s.budgets[account] = &budget{size: size, window: window}
}

// BudgetUsed is how many messages account spent of its current window.
func (s *Server) BudgetUsed(account string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.budgets[account]
	if b == nil || !s.nowLocked().Before(b.reset) {
		return 0
	}
	return b.used
}

// budgetLocked charges a message of account name to its budget, when it
// has one and no lasting state (st) answers first: it returns the 429 of
// a spent budget, or nil with the utilization set in *unified. s.mu must
// be held.
func (s *Server) budgetLocked(st *stateAnswer, name, path string, unified *map[string]string) *stateAnswer {
	b := s.budgets[name]
	if st != nil || b == nil || path != MessagesPath {
		return st
	}
	now := s.nowLocked()
	if b.reset.IsZero() || !now.Before(b.reset) {
		// On a whole second, as the reset header says it: a client
		// that waits for the header's reset finds the window new.
		b.used, b.reset = 0, now.Add(b.window+time.Second-1).Truncate(time.Second)
	}
	h := cloneMap(*unified)
	reset := strconv.FormatInt(b.reset.Unix(), 10)
	h[UnifiedPrefix+"reset"], h[UnifiedPrefix+"5h-reset"] = reset, reset
	h[UnifiedPrefix+"representative-claim"] = "five_hour"
	if b.used >= b.size {
		h[UnifiedPrefix+"status"], h[UnifiedPrefix+"5h-status"] = "rejected", "rejected"
		h[UnifiedPrefix+"5h-utilization"] = "1.0"
		*unified = h
		return &stateAnswer{status: http.StatusTooManyRequests, typ: "rate_limit_error",
			message: "This request would exceed your account's rate limit. Please try again later.", headers: h}
	}
	b.used++
	u := float64(b.used) / float64(b.size)
	status := "allowed"
	if u >= 0.9 {
		status = "allowed_warning"
	}
	h[UnifiedPrefix+"status"], h[UnifiedPrefix+"5h-status"] = status, status
	h[UnifiedPrefix+"5h-utilization"] = strconv.FormatFloat(u, 'f', 4, 64)
	*unified = h
	return nil
}

// UsagePath is Anthropic's usage endpoint for OAuth accounts: GET with
// the bearer token, answered with each window's utilization in percent
// and its reset.
const UsagePath = "/api/oauth/usage"

// UsageCalls is how many usage requests the fake answered for account.
func (s *Server) UsageCalls(account string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usageCalls[account]
}

// handleUsage answers the usage endpoint from the account's rate-limit
// headers (SetUnified) and its budget, without charging it.
func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("request-id", randomID("req_"))
	name, refusal := s.authenticate(r)
	if refusal != "" || r.Header.Get("Authorization") == "" {
		writeAPIError(w, http.StatusUnauthorized, "authentication_error", "OAuth authentication is required", nil)
		return
	}
	s.mu.Lock()
	h := s.unifiedLocked(name)
	if b := s.budgets[name]; b != nil && s.nowLocked().Before(b.reset) {
		h[UnifiedPrefix+"5h-utilization"] = strconv.FormatFloat(float64(b.used)/float64(b.size), 'f', 4, 64)
		h[UnifiedPrefix+"5h-reset"] = strconv.FormatInt(b.reset.Unix(), 10)
	}
	if s.usageCalls == nil {
		s.usageCalls = map[string]int{}
	}
	s.usageCalls[name]++
	s.mu.Unlock()
	window := func(w string) map[string]any {
		u, _ := strconv.ParseFloat(h[UnifiedPrefix+w+"-utilization"], 64)
		reset, _ := strconv.ParseInt(h[UnifiedPrefix+w+"-reset"], 10, 64)
		return map[string]any{"utilization": u * 100, "resets_at": time.Unix(reset, 0).UTC().Format(time.RFC3339)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"five_hour": window("5h"), "seven_day": window("7d")}, nil)
}
