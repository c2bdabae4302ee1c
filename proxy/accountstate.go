package proxy

import (
	"context"
	"fmt"
	"time"

	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// statusWriteTimeout bounds the write of an account's new status.
const statusWriteTimeout = 5 * time.Second

// stateOf is a's state at now.
func (p *pool) stateOf(a *account, now time.Time) acctstate.State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return a.state(now)
}

// setStatusOnce changes a's status in memory and reports whether it
// changed (concurrent requests may see the same refusal).
func (p *pool) setStatusOnce(a *account, status, reason string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.Status == status && a.StatusReason == reason {
		return false
	}
	a.Status, a.StatusReason = status, reason
	p.statusSetLocked(a)
	return true
}

// keyRefusedReason is the status reason of an API key the upstream
// refused.
func keyRefusedReason(v Verdict) string {
	if v.Message != "" {
		return "API key refused (401): " + v.Message
	}
	return "API key refused (401)"
}

// markStatus takes a out of rotation with status (key_refused,
// quarantined) and reason, in memory at once and in the vault database,
// logs it at warn and publishes the event. An account already in that
// state is left alone.
func (s *Server) markStatus(requestID string, a *account, status, reason string, now time.Time) {
	if !s.pool.setStatusOnce(a, status, reason) {
		return
	}
	if status == store.StatusKeyRefused {
		s.tokens.forget(a.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusWriteTimeout)
	defer cancel()
	if err := store.SetStatus(ctx, s.vaultDB, a.ID, status, reason, now); err != nil {
		s.log.Error("save account status", "account", a.Name, "state", status, "err", err)
	}
	s.pool.statusWritten(a)
	hint := "run `claudeflare accounts check " + a.Name + "`, then `claudeflare accounts unblock " + a.Name + "` once it is fixed"
	if status == store.StatusKeyRefused {
		hint = "run `claudeflare accounts login " + a.Name + "` with a working key"
	}
	s.log.Warn("account out of rotation", "request_id", requestID, "account", a.Name, "state", status,
		"reason", reason, "hint", hint)
	s.pool.events.publish(AccountEvent{Account: a.Name, Kind: AccountEventKind(status), Reason: reason,
		State: acctstate.State{Word: status, Reason: reason}, At: now})
}

// unauthorized rests a after a 401 that no refresh cured, with backoff;
// the unauthorizedLogin-th in a row marks an OAuth account needs_login.
func (s *Server) unauthorized(requestID string, a *account, now time.Time) {
	n := s.pool.unauthorized(a, now)
	st := s.pool.stateOf(a, now)
	s.log.Warn("401 not cured by a refresh: account resting", "request_id", requestID, "account", a.Name,
		"state", st.String(), "in_a_row", n)
	if n >= unauthorizedLogin && a.Kind == store.KindOAuth {
		ctx, cancel := context.WithTimeout(context.Background(), statusWriteTimeout)
		defer cancel()
		_ = s.tokens.needsLogin(ctx, a, fmt.Sprintf("%d answers 401 in a row that no token refresh cured", n))
	}
}
