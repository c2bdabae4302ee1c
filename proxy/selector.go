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
	Tier         int // the plan's size (1, 5, 20): the weight of its headroom
	Paused       bool
	Status       string // store.StatusOK, StatusNeedsLogin, StatusKeyRefused or StatusQuarantined
	StatusReason string
	Overage      string // store.OverageAvoid ("" too) or store.OverageAllow
	upstream     string // cloud kinds: the row's settings JSON (cloud.go)

	seen      rowStatus // the row the status was last taken from
	statusGen uint64    // pool.statusGen when this process last set Status
	// statusWriting counts the statuses this process set in memory and
	// is still writing to the vault: while one is, no row read by a poll
	// is newer than it.
	statusWriting int
	unblockedAt   int64     // the row's unblocked_at last acted on
	unblocks      int       // how many unblocks this process applied (refresh backoffs older than one are void)
	checkedAt     time.Time // the last re-check probe of a far block or quarantine
	limit         LimitState
	inflight      int
	served        int64
	lastUsed      time.Time
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
// obstacle is a rate limit, cooldown or rest (not the rest after an
// uncured 401).
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
		// The rest after a 401 no refresh cured is not a rate limit: no
		// wait of the client's cures it, so it must not turn the proxy's
		// answer into a 429 with a retry-after that Claude Code obeys.
		return false, a.limit.Reason != LimitUnauthorized, st.String(), st.Until
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
	maxUtil  float64 // affinity: routing.max_utilization (0 = 1)

	active   int64 // session strategy: the active account's id, 0 = none
	since    time.Time
	rr       uint64
	sessions *sessionTable // affinity strategy; nil = an empty table of no bound
}

// route is what the selector knows of a request.
type route struct {
	fam string // the model family ("" = unknown)
	key string // the affinity key ("" = none)
	// peek: a session-less call (count_tokens, models): it goes to its
	// session's account when one is known, and places no session.
	peek bool
}

// pick orders the usable accounts of accts (sorted by priority, then
// name) for a request of model family fam ("" = unknown).
func (s *selector) pick(accts []*account, now time.Time, fam string) selection {
	return s.pickFor(accts, now, route{fam: fam})
}

// pickFor orders the usable accounts of accts (sorted by priority, then
// name) for the request rt. Accounts served on extra usage whose policy
// avoids it go last.
func (s *selector) pickFor(accts []*account, now time.Time, rt route) selection {
	fam := rt.fam
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
	case config.StrategyAffinity:
		sel.Candidates = s.affinity(accts, usable, now, rt)
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

// affinity orders usable for the affinity strategy: the session's own
// account first while it is usable and under the threshold (or every
// account is over it), else the accounts under the threshold by headroom,
// then those over it. A request with a key and no live session places
// its session on the first.
func (s *selector) affinity(accts, usable []*account, now time.Time, rt route) []*account {
	if s.sessions == nil {
		s.sessions = newSessionTable(0, 0)
	}
	limit := s.limit()
	var under, over []*account
	for _, a := range usable {
		if a.utilization(now) < limit {
			under = append(under, a)
		} else {
			over = append(over, a)
		}
	}
	if len(under) == 0 {
		// Every account is at the threshold: moving a session would
		// cost its cache and win nothing; they stay until a hard limit.
		under, over = over, nil
	}
	if rt.key != "" {
		if id, ok := s.sessions.get(rt.key, now); ok {
			if i := slices.IndexFunc(under, func(a *account) bool { return a.ID == id }); i >= 0 {
				own := under[i]
				rest := append(slices.Delete(slices.Clone(under), i, i+1), over...)
				byHeadroom(rest, now, s.sessions.counts)
				return append([]*account{own}, rest...)
			}
		}
	}
	byHeadroom(under, now, s.sessions.counts)
	byHeadroom(over, now, s.sessions.counts)
	order := append(under, over...)
	if rt.key != "" && !rt.peek && !s.home(rt.key, accts, now) {
		s.sessions.put(rt.key, order[0].ID, now)
	}
	return order
}

// limit is the utilization at which an account takes no new sessions.
func (s *selector) limit() float64 {
	if s.maxUtil <= 0 {
		return 1
	}
	return s.maxUtil
}

// home reports whether key's session has an account that may keep it at
// now: usable for requests of any family (a model-scoped limit moves
// only that family's requests, not the session) and under the threshold,
// unless every usable account is over it.
func (s *selector) home(key string, accts []*account, now time.Time) bool {
	id, ok := s.sessions.get(key, now)
	if !ok {
		return false
	}
	limit, full := s.limit(), true
	var own *account
	for _, a := range accts {
		if ok, _, _, _ := a.usableFor(now, ""); ok && a.utilization(now) < limit {
			full = false
		}
		if a.ID == id {
			own = a
		}
	}
	if own == nil {
		return false
	}
	ok, _, _, _ = own.usableFor(now, "")
	return ok && (full || own.utilization(now) < limit)
}

// stay records that key's session was answered by a at now: a failover
// moves the session to the account that answered, unless its own can
// still keep it (it was passed over for a model-scoped limit).
func (s *selector) stay(key string, a *account, accts []*account, now time.Time) {
	if s.strategy != config.StrategyAffinity || key == "" || s.sessions == nil {
		return
	}
	if id, ok := s.sessions.get(key, now); ok && (id == a.ID || s.home(key, accts, now)) {
		return
	}
	s.sessions.put(key, a.ID, now)
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
