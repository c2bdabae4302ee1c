package proxy

import (
	"slices"
	"time"

	"github.com/claudeflare/claudeflare/config"
	"github.com/claudeflare/claudeflare/internal/acctstate"
	"github.com/claudeflare/claudeflare/store"
)

// account is the in-memory state of one account. ID, Name and Kind are
// fixed at creation and read freely; every other field is guarded by the
// pool's mutex (reload replaces Priority, Paused, Overage and Status).
type account struct {
	ID           int64
	Name         string
	Kind         string // "oauth" | "apikey"
	Priority     int
	Paused       bool
	Status       string // store.StatusOK, StatusNeedsLogin, StatusKeyRefused or StatusQuarantined
	StatusReason string
	Overage      string // store.OverageAvoid ("" too) or store.OverageAllow

	seen        rowStatus // the row the status was last taken from
	unblockedAt int64     // the row's unblocked_at last acted on
	unblocks    int       // how many unblocks this process applied (refresh backoffs older than one are void)
	checkedAt   time.Time // the last re-check probe of a far block or quarantine
	limit       LimitState
	inflight    int
	served      int64
	lastUsed    time.Time
}

// state is the account's state at now, in the one set of words.
func (a *account) state(now time.Time) acctstate.State {
	st := a.limit.state(now)
	switch {
	case a.Status == store.StatusNeedsLogin || a.Status == store.StatusKeyRefused || a.Status == store.StatusQuarantined:
		st.Word, st.Reason, st.Until, st.Window, st.Family = a.Status, a.StatusReason, time.Time{}, "", ""
	case a.Status != "" && a.Status != store.StatusOK:
		// A status this version does not know: out of rotation, named as is.
		st.Word, st.Reason, st.Until, st.Window, st.Family = a.Status, a.StatusReason, time.Time{}, "", ""
	case a.Paused:
		st.Word, st.Until, st.Window, st.Family = acctstate.Paused, time.Time{}, "", ""
	}
	return st
}

// usable reports whether the account may be tried at now for a request
// of no known model family, and if not why. limited is true when the only
// obstacle is a rate limit, cooldown or rest.
func (a *account) usable(now time.Time) (ok, limited bool, reason string) {
	ok, limited, reason, _ = a.usableFor(now, "")
	return ok, limited, reason
}

// usableFor reports whether the account may be tried at now for a
// request of model family fam ("" = unknown), and if not why, in the
// state words ("limited (5h) until ...", "limited_model (opus) until
// ...", "needs_login: ... (run ...)"); until is when a limit ends.
func (a *account) usableFor(now time.Time, fam string) (ok, limited bool, reason string, until time.Time) {
	st := a.state(now)
	switch st.Word {
	case acctstate.OK, acctstate.LimitedModel:
		blocked, t := a.limit.BlockedFor(now, fam)
		if !blocked {
			return true, false, "", time.Time{}
		}
		m := acctstate.State{Word: acctstate.LimitedModel, Family: fam, Until: t}
		return false, true, m.String(), t
	case acctstate.Limited, acctstate.RefreshBlocked:
		return false, true, st.String(), st.Until
	case acctstate.NeedsLogin:
		r := st.String() + " (run `claudeflare accounts login " + a.Name + "`)"
		return false, false, r, time.Time{}
	}
	return false, false, st.String(), time.Time{}
}

// overageAvoided reports whether a is served on extra usage at now and
// its policy says to try it last.
func (a *account) overageAvoided(now time.Time) bool {
	return a.Overage != store.OverageAllow && a.limit.Overage.After(now)
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

// pick orders the usable accounts of accts (sorted by priority, then
// name) for a request of model family fam ("" = unknown). Accounts served
// on extra usage whose policy avoids it go last.
func (s *selector) pick(accts []*account, now time.Time, fam string) selection {
	var sel selection
	usable := make([]*account, 0, len(accts))
	for _, a := range accts {
		ok, limited, reason, until := a.usableFor(now, fam)
		if ok {
			usable = append(usable, a)
			continue
		}
		sel.Reasons = append(sel.Reasons, a.Name+": "+reason)
		if limited {
			sel.Limited = true
			if sel.EarliestOK.IsZero() || until.Before(sel.EarliestOK) {
				sel.EarliestOK, sel.Soonest = until, a.limit.clone()
				if !until.Equal(a.limit.Until) {
					// A model-scoped limit: say so as Anthropic would.
					sel.Soonest.Until, sel.Soonest.Reason, sel.Soonest.Claim = until, "rejected", "seven_day_"+fam
				}
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
	// Extra usage costs money: an account that policy steers away from
	// is tried after every other, never left out.
	slices.SortStableFunc(sel.Candidates, func(a, b *account) int {
		return boolInt(a.overageAvoided(now)) - boolInt(b.overageAvoided(now))
	})
	return sel
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
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
