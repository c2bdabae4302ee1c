package proxy

import (
	"fmt"
	"slices"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/store"
)

// account is the in-memory state of one account. ID, Name and Kind are
// fixed at creation and read freely; every other field is guarded by the
// pool's mutex (reload replaces Priority, Paused and Status).
type account struct {
	ID           int64
	Name         string
	Kind         string // "oauth" | "apikey"
	Priority     int
	Paused       bool
	Status       string // store.StatusOK or store.StatusNeedsLogin
	StatusReason string

	seen     rowStatus // the row the status was last taken from
	limit    LimitState
	inflight int
	served   int64
	lastUsed time.Time
}

// usable reports whether the account may be tried at now, and if not why.
// limited is true when the only obstacle is a rate limit or cooldown.
func (a *account) usable(now time.Time) (ok, limited bool, reason string) {
	switch {
	case a.Paused:
		return false, false, "paused"
	case a.Status != "" && a.Status != store.StatusOK:
		r := a.Status
		if a.Status == store.StatusNeedsLogin {
			r = "needs login (run `claudeflare accounts login " + a.Name + "`)"
		}
		if a.StatusReason != "" {
			r += ": " + a.StatusReason
		}
		return false, false, r
	case a.limit.Blocked(now):
		what := "rate limited"
		switch a.limit.Reason {
		case LimitCooldown:
			what = "cooling down after a 429"
		case LimitRefreshFailed:
			what = "token refresh failing, resting"
		case "", LimitRateLimited:
		default:
			what = "rate limited (" + a.limit.Reason + ")"
		}
		return false, true, fmt.Sprintf("%s until %s", what, a.limit.Until.UTC().Format(time.RFC3339))
	}
	return true, false, ""
}

// selection is the selector's answer: candidates in the order to try them,
// or, when there are none, why.
type selection struct {
	Candidates []*account
	// When Candidates is empty:
	Limited    bool       // some account is only rate limited: answer 429
	EarliestOK time.Time  // earliest time a limited account comes back
	Soonest    LimitState // the limit state of that account
	Reasons    []string   // "name: reason" per account
}

// selector orders the usable accounts by strategy. It is not safe for
// concurrent use; the pool serialises calls.
type selector struct {
	strategy string
	session  time.Duration

	active int64 // session strategy: the active account's id, 0 = none
	since  time.Time
	rr     uint64
}

// pick orders the usable accounts of accts (sorted by priority, then name).
func (s *selector) pick(accts []*account, now time.Time) selection {
	var sel selection
	usable := make([]*account, 0, len(accts))
	for _, a := range accts {
		ok, limited, reason := a.usable(now)
		if ok {
			usable = append(usable, a)
			continue
		}
		sel.Reasons = append(sel.Reasons, a.Name+": "+reason)
		if limited {
			sel.Limited = true
			if sel.EarliestOK.IsZero() || a.limit.Until.Before(sel.EarliestOK) {
				sel.EarliestOK, sel.Soonest = a.limit.Until, a.limit
			}
		}
	}
	if len(usable) == 0 {
		// (A 529 never rests an account, so none is left out for one.)
		return sel
	}
	sel.Reasons = nil
	sel.Limited = false
	sel.EarliestOK, sel.Soonest = time.Time{}, LimitState{}
	switch s.strategy {
	case config.StrategyRoundRobin:
		k := int(s.rr % uint64(len(usable)))
		s.rr++
		sel.Candidates = append(usable[k:len(usable):len(usable)], usable[:k]...)
	case config.StrategyLeastUsed:
		slices.SortStableFunc(usable, func(a, b *account) int {
			if a.inflight != b.inflight {
				return a.inflight - b.inflight
			}
			switch {
			case a.served < b.served:
				return -1
			case a.served > b.served:
				return 1
			}
			return 0
		})
		sel.Candidates = usable
	default: // session
		idx := -1
		if s.active != 0 && now.Sub(s.since) < s.session {
			idx = slices.IndexFunc(usable, func(a *account) bool { return a.ID == s.active })
		}
		if idx < 0 {
			// The session ended or its account is out: the first in
			// priority order starts a new one.
			s.active, s.since = usable[0].ID, now
			idx = 0
		}
		if idx > 0 {
			a := usable[idx]
			copy(usable[1:idx+1], usable[:idx])
			usable[0] = a
		}
		sel.Candidates = usable
	}
	return sel
}

// served records that a request succeeded on a. Under the session strategy
// a failover moves the session to the account that answered.
func (s *selector) served(a *account, now time.Time) {
	if s.strategy == config.StrategySession || s.strategy == "" {
		if s.active != a.ID {
			s.active, s.since = a.ID, now
		}
	}
}
